import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import Observability
import Outbound
import PostgresNIO
import Primitives
import Queue
import Resilience
import ServiceLifecycle
import Testing

/// Sending through the chips table (seed T05.1–T05.4, T02.4) with workers against fake
/// Evolution and Z-API servers, one per chip, and a real Postgres: what each fake receives and
/// what the rows say.
@Suite(.migratedDatabase(maximumConnections: 20), .timeLimit(.minutes(3))) struct ChipTests {
    let logger = TestDatabase.logger

    struct Setup: DatabaseSetup {
        let url: DatabaseURL
        let client: PostgresClient
        let queue: MessageQueue
        let evolutions: [FakeEvolution]
        let zapi: FakeZAPI
        let http: HTTPClient

        /// Chip `chip-<i>` sends through `evolutions[i]`; `chip-z` through `zapi`.
        var environment: [String: String] {
            var environment = ["ZAPI_CHIP_TOKEN": zapi.token, "ZAPI_CHIP_CLIENT_TOKEN": zapi.clientToken]
            for (index, evolution) in evolutions.enumerated() { environment["CHIP_\(index)_KEY"] = evolution.apiKey }
            return environment
        }
    }

    /// The test's database, three fake Evolution chips and a fake Z-API; torn down after.
    func withSetup(_ body: (Setup) async throws -> Void) async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        var evolutions: [FakeEvolution] = []
        for index in 0..<3 { evolutions.append(try await FakeEvolution.start(apiKey: "key-\(index)", instance: "inst-\(index)")) }
        let zapi = try await FakeZAPI.start()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let setup = Setup(url: url, client: client, queue: MessageQueue(client: client), evolutions: evolutions, zapi: zapi, http: http)
        do {
            try await body(setup)
        } catch {
            try? await http.shutdown()
            for evolution in evolutions { await evolution.shutdown() }
            await zapi.shutdown()
            throw error
        }
        try await http.shutdown()
        for evolution in evolutions { await evolution.shutdown() }
        await zapi.shutdown()
    }

    func addEvolutionChip(_ setup: Setup, _ index: Int, limit: Int = 200, interval: Int = 0, isDefault: Bool = false) async throws {
        try await setup.client.query(
            """
            SELECT ops.add_chip(\("chip-\(index)"), \("Chip \(index)"), 'evolution', \(setup.evolutions[index].instance), \("CHIP_\(index)_KEY"),
                                base_url => \(setup.evolutions[index].baseURL), limite_diario => \(limit)::int,
                                min_intervalo_segundos => \(interval)::int, is_default => \(isDefault), motivo => 'test chip')
            """,
            logger: logger
        )
    }

    func addZAPIChip(_ setup: Setup) async throws {
        try await setup.client.query(
            """
            SELECT ops.add_chip('chip-z', 'Chip Z', 'zapi', \(setup.zapi.instanceID), 'ZAPI_CHIP_TOKEN',
                                base_url => \(setup.zapi.baseURL), client_token_env => 'ZAPI_CHIP_CLIENT_TOKEN',
                                min_intervalo_segundos => 0, motivo => 'test chip')
            """,
            logger: logger
        )
    }

    /// A sender on the chips table alone, as a worker process builds it.
    func chipSender(_ setup: Setup, registry: CircuitBreakerRegistry, cacheDuration: Duration = .seconds(60), metrics: SendMetrics = SendMetrics()) -> WhatsAppSender {
        let factory = ChipProviderFactory(httpClient: setup.http, environment: setup.environment, timeout: .seconds(30))
        let roster = ChipRoster(
            store: ChipStore(client: setup.client), registry: registry, cacheDuration: cacheDuration,
            makeProvider: { try factory.provider(for: $0) }, logger: logger
        )
        return WhatsAppSender(routes: [], rateLimiter: nil, registry: registry, chips: roster, circuitDeferralJitter: .seconds(1), metrics: metrics)
    }

    func registry() -> CircuitBreakerRegistry {
        CircuitBreakerRegistry(
            defaultPolicy: .init(consecutiveFailures: 3, initialResetWait: .seconds(300), maximumResetWait: .seconds(600)),
            logger: logger
        )
    }

    @discardableResult
    func enqueue(_ setup: Setup, count: Int, from start: Int = 0) async throws -> [UUID] {
        var ids: [UUID] = []
        for number in start..<(start + count) {
            let message = NewMessage(clienteID: "medico-\(number)", telefone: String(format: "55119%08d", number), conteudo: "mensagem \(number)", tipo: .resposta)
            ids.append(try await setup.queue.enqueue(message, logger: logger).id)
        }
        return ids
    }

    /// Runs one worker per sender (each its own "process": its identity, breakers, roster and
    /// LISTEN connections) until `body` returns.
    func runWorkers<Result: Sendable>(
        _ setup: Setup,
        senders: [(WhatsAppSender, CircuitBreakerRegistry)],
        concurrency: Int = 4,
        _ body: () async throws -> Result
    ) async throws -> Result {
        var services: [any Service] = []
        for (sender, registry) in senders {
            let worker = TestWorker(setup, sender: sender, concurrency: concurrency, details: { sender.healthDetails() })
            var extra: [any Service] = [CircuitBreakerSync(registry: registry, client: setup.client, listenURL: setup.url, processID: worker.identity.id, logger: logger)]
            if let roster = sender.chips { extra.append(ChipRosterSync(roster: roster, listenURL: setup.url, logger: logger)) }
            services += worker.services(extra)
        }
        return try await whileRunning(services, body)
    }

    // MARK: - SQL

    /// Chips are added, paused, resumed and retired through audited functions; bad input is
    /// refused with SQLSTATE 22023; the secret is never in the table.
    @Test func opsFunctionsAreAuditedAndRefuseBadInput() async throws {
        try await withSetup { setup in
            try await addEvolutionChip(setup, 0)
            try await setup.client.query("SELECT ops.pause_chip('chip-0', 'too many blocks')", logger: logger)
            try await setup.client.query("SELECT ops.resume_chip('chip-0', 'blocks cleared')", logger: logger)
            try await setup.client.query("SELECT ops.retire_chip('chip-0', 'number banned')", logger: logger)
            let events = try await setup.client.query(
                "SELECT acao, coalesce(de, ''), coalesce(para, ''), motivo, feito_por = session_user FROM chip_events WHERE chip_id = 'chip-0' ORDER BY id",
                logger: logger
            ).collect().map { try $0.decode((String, String, String, String, Bool).self) }
            #expect(events.map(\.0) == ["added", "status", "status", "status"])
            #expect(events.map(\.2) == ["ativo", "pausado", "ativo", "banido"])
            #expect(events.map(\.3) == ["test chip", "too many blocks", "blocks cleared", "number banned"])
            #expect(events.allSatisfy { $0.4 })
            // Each is an intervention in ops_audit too, like every ops function's.
            let interventions = try await setup.client.query(
                "SELECT acao || ' ' || coalesce(argumentos->>'status', argumentos->>'provider') || ': ' || motivo FROM ops_audit ORDER BY id",
                logger: logger
            ).collect().map { try $0.decode(String.self) }
            #expect(interventions == [
                "add_chip evolution: test chip", "set_chip_status pausado: too many blocks",
                "set_chip_status ativo: blocks cleared", "set_chip_status banido: number banned",
            ])
            // A change by hand is audited too.
            try await setup.client.query("UPDATE chips SET status = 'ativo' WHERE id = 'chip-0'", logger: logger)
            #expect(try await scalar(setup, String.self, "SELECT motivo FROM chip_events ORDER BY id DESC LIMIT 1") == "changed by hand")
            // The table holds the variable's name, not the key.
            #expect(try await scalar(setup, String.self, "SELECT credential_env FROM chips WHERE id = 'chip-0'") == "CHIP_0_KEY")
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM chips WHERE row_to_json(chips)::text LIKE '%key-0%'") == 0)

            let bad = [
                "SELECT ops.pause_chip('chip-0', '  ')",
                "SELECT ops.pause_chip('nope', 'no such chip')",
                "SELECT ops.set_chip_status('chip-0', 'vendido', 'bad status')",
                "SELECT ops.add_chip('Bad Id', 'x', 'evolution', 'i', 'KEY', base_url => 'http://x', motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'telegram', 'i', 'KEY', motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'evolution', 'i', 'KEY', motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'zapi', 'i', 'KEY', motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'evolution', 'i', 'the-secret-itself', base_url => 'http://x', motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'evolution', 'i', 'KEY', base_url => 'http://x', limite_diario => 0, motivo => 'm')",
                "SELECT ops.add_chip('c1', 'x', 'evolution', 'i', 'KEY', base_url => 'http://x')",
                "SELECT ops.add_chip('chip-0', 'x', 'evolution', 'i', 'KEY', base_url => 'http://x', motivo => 'twice')",
            ]
            for sql in bad {
                do {
                    _ = try await setup.client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
                    Issue.record("accepted: \(sql)")
                } catch let error as PSQLError {
                    #expect(error.serverInfo?[.sqlState] == "22023", "\(sql): \(String(reflecting: error))")
                }
            }
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM chips") == 1)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM ops_audit") == 4)
        }
    }

    // MARK: - Selection

    /// Three chips, three workers: each chip's daily limit holds exactly; what no chip can
    /// send waits FAILED_NO_CHIP with no attempt burned; every message reaches one fake once,
    /// and `chip_id` and `provider` say which; `ops.chips_uso` counts it.
    @Test func dailyLimitsHoldAcrossThreeWorkers() async throws {
        try await withSetup { setup in
            for index in 0..<3 { try await addEvolutionChip(setup, index, limit: 5) }
            let ids = try await enqueue(setup, count: 21)
            let senders = (0..<3).map { _ in let registry = registry(); return (chipSender(setup, registry: registry), registry) }
            try await runWorkers(setup, senders: senders) {
                try await eventually("15 are sent and 6 deferred") {
                    let sent = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'")
                    let waiting = try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_NO_CHIP' AND status = 'pendente'")
                    return sent == 15 && waiting == 6
                }
            }
            for index in 0..<3 {
                #expect(setup.evolutions[index].sendAttempts == 5)
                #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE chip_id = 'chip-\(index)' AND provider = 'evolution' AND status = 'enviada'") == 5)
                #expect(try await scalar(setup, Int.self, "SELECT uso_hoje::int8 FROM chips WHERE id = 'chip-\(index)'") == 5)
                #expect(try await scalar(setup, Int.self, "SELECT enviadas_hoje::int8 FROM ops.chips_uso WHERE id = 'chip-\(index)'") == 5)
            }
            let texts = setup.evolutions.flatMap(\.sentTexts).map(\.text)
            #expect(Set(texts).count == 15 && texts.count == 15)
            let deferred = try await scalar(
                setup, String.self,
                "SELECT coalesce(string_agg(format('%s %s %s %s', status, outcome, outcome_reason_code, round(extract(epoch FROM agendar_para - now()))), '; '), '') FROM fila_mensagens WHERE status <> 'enviada'"
            )
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_NO_CHIP' AND tentativas = 0 AND outcome_reason_code = 'no_chip:limit_or_disconnected' AND agendar_para > now() + interval '200 seconds'") == 6, "\(deferred)")
            #expect(ids.count == 21)
        }
    }

    /// A chip's minimum interval holds across three workers: Postgres never reserves two
    /// sends of one chip closer than the interval. Read from the reservations themselves (a
    /// trigger copies each one's instant), by the database's clock: when the request then
    /// reaches the fake depends on the machine's load, which the interval does not promise.
    @Test func pacingHoldsAcrossThreeWorkers() async throws {
        try await withSetup { setup in
            for index in 0..<3 { try await addEvolutionChip(setup, index, interval: 2) }
            try await ChipReservationLog.install(client: setup.client, logger: logger)
            try await enqueue(setup, count: 30)
            let senders = (0..<3).map { _ in let registry = registry(); return (chipSender(setup, registry: registry), registry) }
            try await runWorkers(setup, senders: senders) {
                try await eventually("each chip sent three") { setup.evolutions.allSatisfy { $0.sendAttempts >= 3 } }
            }
            let closest = try await ChipReservationLog.closestGaps(client: setup.client, logger: logger)
            #expect(closest.count == 3)
            for gap in closest {
                #expect(gap.intervals >= 2, "\(gap.chip): \(gap.intervals) intervals")
                #expect(gap.seconds >= 2, "\(gap.chip): two reservations \(gap.seconds) s apart")
            }
            // Waiting rows say why.
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_NO_CHIP' AND outcome_reason_code <> 'no_chip:pacing'") == 0)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'erro' OR tentativas > 0") == 0)
        }
    }

    /// A chip reported disconnected is skipped at once (the NOTIFY drops the cache); with the
    /// rotation empty the default chip takes over; with every chip down messages wait
    /// FAILED_NO_CHIP, no attempt burned, and go out once a chip reconnects.
    @Test func disconnectedChipsAreSkippedAndTheDefaultTakesOver() async throws {
        try await withSetup { setup in
            try await addEvolutionChip(setup, 0)
            try await addEvolutionChip(setup, 1)
            try await addEvolutionChip(setup, 2, isDefault: true)
            let registry = registry()
            let sender = chipSender(setup, registry: registry)
            try await runWorkers(setup, senders: [(sender, registry)]) {
                try await enqueue(setup, count: 4, from: 0)
                try await eventually("the first four are sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 4
                }
                // The rotation takes them; the default waits for it to be empty.
                #expect(setup.evolutions[2].sendAttempts == 0)
                #expect(setup.evolutions[0].sendAttempts + setup.evolutions[1].sendAttempts == 4)
                let chip0 = setup.evolutions[0].sendAttempts
                let chip1 = setup.evolutions[1].sendAttempts

                // The monitor finds chip-0 disconnected: it gets nothing more.
                _ = try await ChipStore(client: setup.client).recordConnection(chipID: "chip-0", state: .close, detail: "close", logger: logger)
                try await eventually("the roster drops its list") { try await sender.chips!.snapshot(logger: logger).entries.first { $0.chip.id == "chip-0" }?.chip.connectionState == .close }
                try await enqueue(setup, count: 4, from: 4)
                try await eventually("eight are sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 8
                }
                #expect(setup.evolutions[0].sendAttempts == chip0)
                #expect(setup.evolutions[1].sendAttempts == chip1 + 4)

                // chip-1 paused: the default takes over.
                try await setup.client.query("SELECT ops.pause_chip('chip-1', 'test')", logger: logger)
                try await eventually("the roster sees the pause") { try await sender.chips!.snapshot(logger: logger).entries.first { $0.chip.id == "chip-1" }?.chip.status == .pausado }
                try await enqueue(setup, count: 2, from: 8)
                try await eventually("ten are sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 10
                }
                #expect(setup.evolutions[2].sendAttempts == 2)
                #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE chip_id = 'chip-2'") == 2)

                // Every chip down: deferred, nothing lost, no attempt burned.
                _ = try await ChipStore(client: setup.client).recordConnection(chipID: "chip-2", state: .close, detail: "close", logger: logger)
                try await eventually("the roster sees it") { try await sender.chips!.snapshot(logger: logger).entries.first { $0.chip.id == "chip-2" }?.chip.connectionState == .close }
                try await enqueue(setup, count: 3, from: 10)
                try await eventually("three wait FAILED_NO_CHIP") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE outcome = 'FAILED_NO_CHIP' AND status = 'pendente' AND tentativas = 0") == 3
                }
                #expect(setup.evolutions.map(\.sendAttempts).reduce(0, +) == 10)

                // chip-0 reconnects; the deferred rows come due (as time passing would) and go out.
                _ = try await ChipStore(client: setup.client).recordConnection(chipID: "chip-0", state: .open, detail: "open", logger: logger)
                // Once the roster has heard it: a claim before would defer them again, for 5 min.
                try await eventually("the roster sees chip-0 back") {
                    try await sender.chips!.snapshot(logger: logger).entries.first { $0.chip.id == "chip-0" }?.chip.connectionState == .open
                }
                try await setup.client.query("UPDATE fila_mensagens SET agendar_para = now() WHERE status = 'pendente'", logger: logger)
                try await setup.client.query("NOTIFY fila_mensagens", logger: logger)
                try await eventually("all thirteen are sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 13
                }
                #expect(setup.evolutions[0].sendAttempts == chip0 + 3)
            }
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE tentativas > 0") == 0)
        }
    }

    /// One chip's breaker open does not stop the others; a message its failure left for a
    /// retry goes out through another chip; an Evolution outage falls through to a Z-API chip;
    /// every circuit open defers FAILED_CIRCUIT_OPEN as without chips. Every failed call is
    /// counted against its chip (`chip_falhas`, `ops.chips_uso`, `wa_chip_calls_total`), though
    /// the messages were then sent through another.
    @Test func breakersArePerChip() async throws {
        try await withSetup { setup in
            try await addEvolutionChip(setup, 0)
            try await addEvolutionChip(setup, 1)
            setup.evolutions[0].mode = .connectionClosed
            let registry = registry()
            let metrics = PrometheusMetrics(descriptors: SendMetrics.descriptors)
            let sender = chipSender(setup, registry: registry, metrics: SendMetrics(factory: metrics.factory))
            try await runWorkers(setup, senders: [(sender, registry)], concurrency: 1) {
                try await enqueue(setup, count: 10)
                try await eventually("all ten are sent") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE status = 'enviada'") == 10
                }
                #expect(registry.breaker(named: "chip.chip-0").state == .open)
                #expect(registry.breaker(named: "chip.chip-1").state == .closed)
                #expect(setup.evolutions[0].sendAttempts == 3)
                #expect(setup.evolutions[1].sentTexts.count == 10)
                #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE chip_id = 'chip-1'") == 10)
                // chip-0's three failed calls, counted though their messages went out through chip-1.
                #expect(try await scalar(setup, Int.self, "SELECT sum(falhas)::int8 FROM chip_falhas WHERE chip_id = 'chip-0' AND outcome = 'FAILED_PROVIDER'") == 3)
                #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM chip_falhas WHERE chip_id <> 'chip-0'") == 0)
                #expect(try await scalar(setup, String.self, "SELECT format('%s/%s/%s', falhas_hoje, falhas_7d, enviadas_hoje) FROM ops.chips_uso WHERE id = 'chip-0'") == "3/3/0")
                #expect(try await scalar(setup, String.self, "SELECT format('%s/%s/%s', falhas_hoje, falhas_7d, enviadas_hoje) FROM ops.chips_uso WHERE id = 'chip-1'") == "0/0/10")
                let exposition = await metrics.exposition(logger: logger)
                #expect(Self.sample(exposition, "wa_chip_calls_total", chip: "chip-0", outcome: "FAILED_PROVIDER") == 3)
                #expect(Self.sample(exposition, "wa_chip_calls_total", chip: "chip-1", outcome: "SENT") == 10)
                // The breaker's history names the chip.
                try await eventually("the opening is recorded") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM circuit_transitions WHERE circuit_name = 'chip.chip-0' AND to_state = 'OPEN'") >= 1
                }

                // Evolution down altogether: the Z-API chip takes the messages.
                try await addZAPIChip(setup)
                try await setup.client.query("SELECT ops.force_circuit('chip.chip-1', 'FORCED_OPEN', 'test outage')", logger: logger)
                try await eventually("the roster has the Z-API chip") { try await sender.chips!.snapshot(logger: logger).entries.contains { $0.chip.id == "chip-z" } }
                try await eventually("the override is applied") { registry.breaker(named: "chip.chip-1").state == .forcedOpen }
                try await enqueue(setup, count: 3, from: 10)
                try await eventually("they go through Z-API") {
                    try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE chip_id = 'chip-z' AND provider = 'zapi' AND status = 'enviada'") == 3
                }
                #expect(setup.zapi.sentTexts.count == 3)

                // Every circuit open.
                try await setup.client.query("SELECT ops.force_circuit('chip.chip-z', 'FORCED_OPEN', 'test outage')", logger: logger)
                try await eventually("the override is applied") { registry.breaker(named: "chip.chip-z").state == .forcedOpen }
                // The transitions are written in the background.
                try await eventually("ops.chips_uso shows it") {
                    try await scalar(setup, String.self, "SELECT circuit_state FROM ops.chips_uso WHERE id = 'chip-z'") == "FORCED_OPEN"
                }
            }
            // The sender says so itself.
            let sent = setup.zapi.sentTexts.count + setup.evolutions[1].sentTexts.count
            let result = await sender.send(try await claimOne(setup, number: 20), logger: logger)
            guard case .deferred(let outcome, let reason, _) = result else {
                Issue.record("not deferred: \(result)")
                return
            }
            #expect(outcome == .failedCircuitOpen)
            #expect(reason.hasPrefix("circuit_open:"))
            #expect(setup.zapi.sentTexts.count + setup.evolutions[1].sentTexts.count == sent)
        }
    }

    /// The value of `name`'s sample for `chip` and `outcome` in a Prometheus exposition.
    static func sample(_ exposition: String, _ name: String, chip: String, outcome: String) -> Double? {
        exposition.split(separator: "\n").lazy
            .filter { $0.hasPrefix(name + "{") && $0.contains("chip=\"\(chip)\"") && $0.contains("outcome=\"\(outcome)\"") }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            .first
    }

    func claimOne(_ setup: Setup, number: Int) async throws -> ClaimedMessage {
        try await enqueue(setup, count: 1, from: number)
        let claimed = try await setup.queue.claim(workerID: "test-claimer", limit: 1, logger: logger)
        return try #require(claimed.first)
    }

    /// With no chip in the table, the sender uses the providers it was given, as before chips.
    @Test func anEmptyTableKeepsTheEnvironmentsProviders() async throws {
        try await withSetup { setup in
            let registry = registry()
            let factory = ChipProviderFactory(httpClient: setup.http, environment: setup.environment, timeout: .seconds(30))
            let roster = ChipRoster(store: ChipStore(client: setup.client), registry: registry, makeProvider: { try factory.provider(for: $0) }, logger: logger)
            let evolution = EvolutionProvider(
                configuration: .init(baseURL: setup.evolutions[0].baseURL, apiKey: setup.evolutions[0].apiKey, instance: setup.evolutions[0].instance),
                httpClient: setup.http
            )
            let sender = WhatsAppSender(
                routes: [.init(provider: evolution, breaker: registry.breaker(named: "evolution"))], rateLimiter: nil, registry: registry, chips: roster
            )
            let result = await sender.send(try await claimOne(setup, number: 1), logger: logger)
            guard case .sent(let provider, _, let chipID) = result else {
                Issue.record("not sent: \(result)")
                return
            }
            #expect(provider == "evolution" && chipID == nil)
            #expect(setup.evolutions[0].sentTexts.count == 1)
        }
    }
}
