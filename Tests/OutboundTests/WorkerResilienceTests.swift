import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import Outbound
import PostgresNIO
import Primitives
import Queue
import Resilience
import ServiceLifecycle
import Testing

/// The worker with the WhatsApp pipeline against fake Evolution and Z-API servers and a
/// real Postgres (seed T01.3, T02.3, T02.4, T04.1–T04.3): what the providers receive and what
/// the rows say.
@Suite(.migratedDatabase(maximumConnections: 12), .timeLimit(.minutes(3))) struct WorkerResilienceTests {
    let logger = TestDatabase.logger

    struct Setup: DatabaseSetup {
        let url: DatabaseURL
        let client: PostgresClient
        let queue: MessageQueue
        let registry: CircuitBreakerRegistry
        let evolution: FakeEvolution
        let zapi: FakeZAPI
        let http: HTTPClient
    }

    /// The test's database, both fakes, and an HTTP client; the fakes and client torn down after.
    func withSetup(_ body: (Setup) async throws -> Void) async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let evolution = try await FakeEvolution.start()
        let zapi = try await FakeZAPI.start()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let registry = CircuitBreakerRegistry(
            defaultPolicy: .init(consecutiveFailures: 5, initialResetWait: .milliseconds(300), maximumResetWait: .seconds(2)),
            logger: logger
        )
        do {
            try await body(Setup(url: url, client: client, queue: MessageQueue(client: client), registry: registry, evolution: evolution, zapi: zapi, http: http))
        } catch {
            try? await http.shutdown()
            await evolution.shutdown()
            await zapi.shutdown()
            throw error
        }
        try await http.shutdown()
        await evolution.shutdown()
        await zapi.shutdown()
    }

    /// Time limits are generous unless a test is about timeouts: on a loaded machine a fake
    /// may answer late, and a timeout's retry is a second send by design (it may have
    /// delivered), which would break a count of sends.
    func evolutionProvider(_ setup: Setup, timeout: Duration = .seconds(30)) -> EvolutionProvider {
        EvolutionProvider(
            configuration: .init(baseURL: setup.evolution.baseURL, apiKey: setup.evolution.apiKey, instance: setup.evolution.instance, timeout: timeout),
            httpClient: setup.http
        )
    }

    func zapiProvider(_ setup: Setup) -> ZAPIProvider {
        ZAPIProvider(
            configuration: .init(baseURL: setup.zapi.baseURL, instanceID: setup.zapi.instanceID, token: setup.zapi.token, clientToken: setup.zapi.clientToken, timeout: .seconds(30)),
            httpClient: setup.http
        )
    }

    func sender(_ setup: Setup, evolutionTimeout: Duration = .seconds(30), withZAPI: Bool = false, rateLimited: Bool = false) -> WhatsAppSender {
        var routes = [WhatsAppSender.Route(provider: evolutionProvider(setup, timeout: evolutionTimeout), breaker: setup.registry.breaker(named: "evolution"))]
        if withZAPI {
            routes.append(.init(provider: zapiProvider(setup), breaker: setup.registry.breaker(named: "zapi")))
        }
        let limiter = rateLimited ? RateLimiter(postgres: PostgresRateLimitStore(client: setup.client), logger: logger) : nil
        return WhatsAppSender(routes: routes, rateLimiter: limiter, registry: setup.registry, circuitDeferralJitter: .seconds(1))
    }

    @discardableResult
    func enqueue(_ setup: Setup, count: Int, tipo: MessageKind = .resposta, doctor: ((Int) -> String)? = nil) async throws -> [UUID] {
        var ids: [UUID] = []
        for number in 0..<count {
            let message = NewMessage(
                clienteID: doctor?(number) ?? "medico-\(number)",
                telefone: String(format: "55119%08d", number),
                conteudo: "mensagem \(number)",
                tipo: tipo
            )
            ids.append(try await setup.queue.enqueue(message, logger: logger).id)
        }
        return ids
    }

    func runWorker<Result: Sendable>(
        _ setup: Setup,
        sender: WhatsAppSender,
        concurrency: Int = 1,
        _ body: (ProcessIdentity) async throws -> Result
    ) async throws -> Result {
        let worker = TestWorker(setup, sender: sender, concurrency: concurrency, details: { sender.healthDetails() })
        let sync = CircuitBreakerSync(registry: setup.registry, client: setup.client, listenURL: setup.url, processID: worker.identity.id, logger: logger)
        return try await whileRunning(worker.services([sync])) { try await body(worker.identity) }
    }

    /// T01.3: five failures open the breaker; the worker then makes no calls and claims
    /// nothing; when the provider recovers a probe closes it and everything is sent once.
    @Test func anOpenCircuitStopsCallsAndClaimsUntilTheProviderRecovers() async throws {
        try await withSetup { setup in
            setup.evolution.mode = .connectionClosed
            let ids = try await enqueue(setup, count: 12)
            try await runWorker(setup, sender: sender(setup)) { identity in
                try await eventually("the breaker opens") { setup.registry.breaker(named: "evolution").state == .open }
                // The worker says why it is idle.
                try await eventually("the heartbeat shows the pause") {
                    try await scalar(setup, String.self, "SELECT coalesce((SELECT metadata->>'paused' FROM worker_heartbeats WHERE id = '\(identity.id)'), '')")
                        .contains("every provider's circuit is open: evolution OPEN")
                }
                // Still failing for a while: probes go out, one call each (counted below).
                try await Task.sleep(for: .milliseconds(700))
                // No row was tried without a call: no attempt spent, no outcome. (A probe may be
                // claimed or go out meanwhile: its row counts as untried until its call ends,
                // and the calls are counted after the rows.)
                let untouched = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome IS NULL AND tentativas = 0 AND status IN ('pendente', 'processando')")
                #expect(untouched >= 12 - setup.evolution.sendAttempts)
                #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_PROVIDER' AND outcome_reason_code = 'evolution:http_500'") >= 5)

                setup.evolution.mode = .accept
                try await eventually("every message is sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 12
                }
                #expect(setup.registry.breaker(named: "evolution").state == .closed)
                try await eventually("the heartbeat shows the circuit closed again") {
                    try await scalar(setup, String.self, "SELECT coalesce((SELECT metadata->'circuits'->>'evolution' FROM worker_heartbeats WHERE id = '\(identity.id)'), '')") == "CLOSED"
                }
                try await eventually("the pause is cleared") {
                    try await scalar(setup, Bool.self, "SELECT metadata ? 'paused' FROM worker_heartbeats WHERE id = '\(identity.id)'") == false
                }
            }
            // No call was made while the circuit was open: every failed call is one of the
            // five that opened it or a failed probe, and each burned one attempt.
            let failedProbes = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM circuit_transitions WHERE from_state = 'HALF_OPEN' AND to_state = 'OPEN'")
            let failedCalls = try await scalar(setup, Int.self, "SELECT sum(tentativas)::int8 FROM fila_mensagens")
            #expect(failedCalls == 5 + failedProbes)
            #expect(setup.evolution.sendAttempts == 12 + failedCalls)
            // Each message reached the provider exactly once.
            let sent = setup.evolution.sentTexts.map(\.text)
            #expect(sent.count == 12)
            #expect(Set(sent) == Set((0..<12).map { "mensagem \($0)" }))
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE provider = 'evolution' AND provider_message_id LIKE '3EB0%'") == 12)
            #expect(ids.count == 12)
            let transitions = try await CircuitReport.transitions(circuit: "evolution", hours: 1, client: setup.client, logger: logger)
            #expect(transitions.last?.from == .closed && transitions.last?.to == .open)
            #expect(transitions.first?.to == .closed)
        }
    }

    /// While half-open the worker claims only as many rows as there are probes, however
    /// much room it has: nothing is claimed just to be deferred.
    @Test func halfOpenClaimsOnlyTheProbe() async throws {
        try await withSetup { setup in
            let breaker = setup.registry.breaker(named: "evolution")
            struct Down: Error {}
            for _ in 0..<5 { _ = try? await breaker.execute { throw Down() } }
            #expect(breaker.state == .open)
            try await enqueue(setup, count: 10)
            try await runWorker(setup, sender: sender(setup), concurrency: 10) { _ in
                try await eventually("every message is sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 10
                }
            }
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome <> 'SENT' OR tentativas > 0") == 0)
            #expect(setup.evolution.sendAttempts == 10)
            #expect(breaker.state == .closed)
        }
    }

    /// A worker paused by open circuits still stops promptly and cleanly on shutdown.
    @Test func aPausedWorkerShutsDownCleanly() async throws {
        try await withSetup { setup in
            _ = try await setup.client.query("SELECT ops.force_circuit('evolution', 'FORCED_OPEN', 'test')", logger: logger).collect()
            try await enqueue(setup, count: 3)
            let workerID = try await runWorker(setup, sender: sender(setup), concurrency: 5) { identity in
                try await eventually("the worker pauses") {
                    try await scalar(setup, String.self, "SELECT coalesce((SELECT metadata->>'paused' FROM worker_heartbeats WHERE id = '\(identity.id)'), '')")
                        .contains("evolution FORCED_OPEN")
                }
                return identity.id
            }
            #expect(try await scalar(setup, String.self, "SELECT status FROM worker_heartbeats WHERE id = '\(workerID)'") == "stopped")
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'pendente' AND outcome IS NULL AND tentativas = 0") == 3)
            #expect(setup.evolution.sendAttempts == 0)
        }
    }

    /// T02.4: with Evolution's circuit open, messages go through Z-API without a call to
    /// Evolution.
    @Test func anOpenCircuitFallsBackToTheNextProvider() async throws {
        try await withSetup { setup in
            // Held open by hand, with psql, before the worker starts.
            _ = try await setup.client.query("SELECT ops.force_circuit('evolution', 'FORCED_OPEN', 'maintenance')", logger: logger).collect()
            try await enqueue(setup, count: 5)
            try await runWorker(setup, sender: sender(setup, withZAPI: true), concurrency: 5) { _ in
                try await eventually("every message is sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 5
                }
            }
            #expect(setup.evolution.sendAttempts == 0)
            #expect(setup.zapi.sentTexts.count == 5)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE provider = 'zapi' AND provider_message_id IS NOT NULL") == 5)
            #expect(setup.registry.breaker(named: "evolution").state == .forcedOpen)
        }
    }

    /// Every circuit open: the message is deferred, FAILED_CIRCUIT_OPEN, no attempt spent, no
    /// call made, due again when a circuit may admit a call.
    @Test func everyCircuitOpenDefersWithoutSpendingAnAttempt() async throws {
        try await withSetup { setup in
            let sender = sender(setup, withZAPI: true, rateLimited: true)
            // Nothing is sent before the overrides were read once.
            #expect(sender.readiness() == .paused(retryAfter: .milliseconds(100), reason: "reading the circuit overrides"))
            await CircuitBreakerSync(registry: setup.registry, client: setup.client, listenURL: setup.url, processID: "w1", logger: logger).reloadOverrides()
            #expect(sender.readiness() == .ready(limit: nil))
            for name in ["evolution", "zapi"] {
                setup.registry.breaker(named: name).applyOverride(.forcedOpen, reason: "test")
            }
            #expect(sender.readiness() == .paused(retryAfter: .milliseconds(300), reason: "every provider's circuit is open: evolution FORCED_OPEN, zapi FORCED_OPEN"))
            let ids = try await enqueue(setup, count: 1, tipo: .campanha)
            let claimed = try await setup.queue.claim(workerID: "w1", limit: 10, logger: logger)
            try await setup.client.query("INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w1', 'worker', 't', 1, 't')", logger: logger)
            let result = await sender.send(claimed[0], logger: logger)
            guard case .deferred(let outcome, let reason, let until) = result else {
                Issue.record("expected a deferral, got \(result)")
                return
            }
            #expect(outcome == .failedCircuitOpen)
            #expect(reason == "circuit_open:evolution,zapi")
            #expect(until >= .milliseconds(300) && until <= .milliseconds(1300))
            _ = try await setup.queue.finish([AttemptResult(messageID: ids[0], claim: claimed[0].claim, resolution: .deferred(outcome: outcome, reasonCode: reason, until: until))], logger: logger)
            let row = try await setup.client.query(
                "SELECT status, tentativas, outcome, outcome_reason_code FROM fila_mensagens WHERE id = \(ids[0])",
                logger: logger
            ).collect().first!.decode((String, Int32, String?, String?).self)
            #expect(row.0 == "pendente" && row.1 == 0 && row.2 == "FAILED_CIRCUIT_OPEN" && row.3 == "circuit_open:evolution,zapi")
            #expect(setup.evolution.sendAttempts == 0 && setup.zapi.sendAttempts == 0)
            // The budget spent on the attempt was given back.
            #expect(try await scalar(setup, Int.self, "SELECT coalesce(sum(usado), 0)::int8 FROM rate_limit_counters") == 0)
        }
    }

    /// T02.3: "number not on WhatsApp" fails that message for good and does not count
    /// toward opening; timeouts are retried and do not count either.
    @Test func recipientRejectionsAndTimeoutsDoNotOpenTheCircuit() async throws {
        try await withSetup { setup in
            setup.evolution.numbersNotOnWhatsApp = Set((0..<6).map { String(format: "55119%08d", $0) })
            try await enqueue(setup, count: 6)
            try await runWorker(setup, sender: sender(setup)) { _ in
                try await eventually("every message failed validation") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'erro' AND outcome = 'FAILED_VALIDATION'") == 6
                }
            }
            #expect(setup.registry.breaker(named: "evolution").state == .closed)
            #expect(try await scalar(setup, String.self, "SELECT min(outcome_reason_code) FROM fila_mensagens") == "evolution:number_not_on_whatsapp")

            setup.evolution.numbersNotOnWhatsApp = []
            setup.evolution.latency = .seconds(1)
            let slow = sender(setup, evolutionTimeout: .milliseconds(100))
            try await setup.client.query("DELETE FROM fila_mensagens", logger: logger)
            try await enqueue(setup, count: 6)
            try await runWorker(setup, sender: slow, concurrency: 6) { _ in
                try await eventually("six timeouts are recorded") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_TIMEOUT' AND tentativas >= 1") == 6
                }
            }
            #expect(setup.registry.breaker(named: "evolution").state == .closed)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM circuit_transitions") == 0)
        }
    }

    /// T04.1–T04.3: a doctor's campaign messages past the budget are deferred to the next
    /// window plus jitter without spending an attempt; replies still go out.
    @Test func overBudgetMessagesWaitForTheNextDay() async throws {
        try await withSetup { setup in
            // Three campaign messages and two replies for one doctor.
            let campaign = try await enqueue(setup, count: 3, tipo: .campanha) { _ in "medico-42" }
            let replies = try await enqueue(setup, count: 2, tipo: .resposta) { _ in "medico-42" }
            try await runWorker(setup, sender: sender(setup, rateLimited: true)) { _ in
                // A check that could not read app_settings in time (a loaded machine) defers its
                // message 30-60 s: allow for one.
                try await eventually("one campaign message and both replies are sent, the rest deferred", within: 90) {
                    let sent = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'")
                    let deferred = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_RATE_LIMIT'")
                    return sent == 3 && deferred == 2
                }
            }
            #expect(replies.count == 2 && campaign.count == 3)
            #expect(setup.evolution.sentTexts.count == 3)
            let deferred = try await setup.client.query(
                """
                SELECT tentativas, outcome_reason_code,
                       extract(epoch FROM agendar_para - ((((now() AT TIME ZONE 'America/Sao_Paulo')::date + 1)::timestamp) AT TIME ZONE 'America/Sao_Paulo'))::float8
                  FROM fila_mensagens WHERE outcome = 'FAILED_RATE_LIMIT'
                """,
                logger: logger
            ).collect().map { try $0.decode((Int32, String, Double).self) }
            for (tentativas, reason, pastMidnight) in deferred {
                #expect(tentativas == 0)
                #expect(reason == "rate_limit:cliente_diario")
                // Due between the next midnight in São Paulo and ten minutes after it.
                #expect(pastMidnight >= -2 && pastMidnight <= 602, "\(pastMidnight) s after midnight")
            }
            #expect(try await scalar(setup, Int.self, "SELECT usado::int8 FROM rate_limit_counters WHERE cliente_id = 'medico-42'") == 2)
        }
    }
}
