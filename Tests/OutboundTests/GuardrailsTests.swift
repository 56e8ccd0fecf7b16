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
import Synchronization
import Testing

/// The guardrails (seed T06) in the worker's pipeline, against a fake Evolution and a real
/// Postgres: blocked doctors, `contact_cap_7d` on and off, the bypass and its audit rows, and
/// that a refused message spends no rate-limit budget. Time is in the rows (past
/// `contacted_at`), never waited for.
@Suite(.migratedDatabase(maximumConnections: 24), .timeLimit(.minutes(3))) struct GuardrailsTests {
    let logger = TestDatabase.logger

    struct Setup: DatabaseSetup {
        let url: DatabaseURL
        let client: PostgresClient
        let queue: MessageQueue
        let evolution: FakeEvolution
        let http: HTTPClient
    }

    func withSetup(_ body: (Setup) async throws -> Void) async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let evolution = try await FakeEvolution.start()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await body(Setup(url: url, client: client, queue: MessageQueue(client: client), evolution: evolution, http: http))
        } catch {
            try? await http.shutdown()
            await evolution.shutdown()
            throw error
        }
        try await http.shutdown()
        await evolution.shutdown()
    }

    /// The pipeline `fila worker --sender whatsapp` runs: guardrails, then the rate limiter
    /// (on Postgres, default budgets) and Evolution behind its breaker. The provider's time
    /// limit is generous: a timeout on a loaded machine keeps a campaign's budget spent, and
    /// its retry would then be rate-limited to tomorrow.
    func sender(_ setup: Setup, settings: AppSettings? = nil) -> GuardedSender {
        let provider = EvolutionProvider(
            configuration: .init(baseURL: setup.evolution.baseURL, apiKey: setup.evolution.apiKey, instance: setup.evolution.instance, timeout: .seconds(30)),
            httpClient: setup.http
        )
        let registry = CircuitBreakerRegistry(defaultPolicy: .init(), logger: logger)
        let whatsApp = WhatsAppSender(
            routes: [.init(provider: provider, breaker: registry.breaker(named: "evolution"))],
            rateLimiter: RateLimiter(postgres: PostgresRateLimitStore(client: setup.client), logger: logger)
        )
        return GuardedSender(guardrails: Guardrails(client: setup.client, settings: settings, logger: logger), sender: whatsApp)
    }

    @discardableResult
    func enqueue(_ setup: Setup, _ doctor: String, _ tipo: MessageKind, text: String) async throws -> UUID {
        let phone = "5511" + String(format: "%09d", abs(doctor.hashValue) % 1_000_000_000)
        return try await setup.queue.enqueue(NewMessage(clienteID: doctor, telefone: phone, conteudo: text, tipo: tipo), logger: logger).id
    }

    /// Runs one worker with `sender` until `body` returns.
    func runWorker(_ setup: Setup, sender: any MessageSender, _ body: (ProcessIdentity) async throws -> Void) async throws {
        let worker = TestWorker(setup, sender: sender, concurrency: 4)
        try await whileRunning(worker.services()) { try await body(worker.identity) }
    }

    func execute(_ setup: Setup, _ sql: String) async throws {
        _ = try await setup.client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
    }

    /// `status outcome reason tentativas` of a message.
    func state(_ setup: Setup, _ id: UUID) async throws -> String {
        try await scalar(
            setup, String.self,
            "SELECT concat_ws(' ', status, outcome, outcome_reason_code, tentativas) FROM fila_mensagens WHERE id = '\(id.uuidString)'"
        )
    }

    func untilSettled(_ setup: Setup, _ ids: [UUID]) async throws {
        let list = ids.map { "'\($0.uuidString)'" }.joined(separator: ",")
        try await eventually("every message has an outcome") {
            try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM fila_mensagens WHERE id IN (\(list)) AND status IN ('enviada', 'erro')") == ids.count
        }
    }

    /// Campaign contacts of `doctor`, `ago` each (an SQL interval), as earlier sends left them.
    func contacts(_ setup: Setup, _ doctor: String, ago: [String]) async throws {
        for interval in ago {
            try await execute(setup, "INSERT INTO guardrail_contacts (mensagem_id, cliente_id, contacted_at) VALUES (gen_random_uuid(), '\(doctor)', now() - interval '\(interval)')")
        }
    }

    /// The weight spent from `doctor`'s rate-limit budget today (0 without a row).
    func budgetSpent(_ setup: Setup, _ doctor: String) async throws -> Int {
        try await scalar(setup, Int.self, "SELECT coalesce(sum(usado), 0)::int8 FROM rate_limit_counters WHERE cliente_id = '\(doctor)'")
    }

    // MARK: - Block

    @Test func aBlockedDoctorsMessageFailsForGoodAndSpendsNothing() async throws {
        try await withSetup { setup in
            try await execute(setup, "SELECT ops.block_medico('medico-bloqueado', 'pediu para parar')")
            let blocked = try await enqueue(setup, "medico-bloqueado", .followup, text: "para o bloqueado")
            let other = try await enqueue(setup, "medico-livre", .followup, text: "para o livre")
            try await runWorker(setup, sender: sender(setup)) { _ in
                try await untilSettled(setup, [blocked, other])
            }
            // Permanent: erro after one attempt although three were allowed, never retried.
            #expect(try await state(setup, blocked) == "erro FAILED_GUARDRAIL guardrail:blocked 1")
            #expect(try await scalar(setup, String.self, "SELECT ultimo_erro FROM fila_mensagens WHERE id = '\(blocked.uuidString)'").contains("blocked"))
            #expect(try await state(setup, other) == "enviada SENT 0")
            #expect(setup.evolution.sentTexts.map(\.text) == ["para o livre"])
            // No budget spent on the refused message; the other spent its followup weight.
            #expect(try await budgetSpent(setup, "medico-bloqueado") == 0)
            #expect(try await budgetSpent(setup, "medico-livre") == 1)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_bypasses") == 0)
        }
    }

    @Test func anUnblockedDoctorReceivesMessagesAgain() async throws {
        try await withSetup { setup in
            try await execute(setup, "SELECT ops.block_medico('medico-1', 'número errado')")
            try await execute(setup, "SELECT ops.unblock_medico('medico-1', 'número corrigido')")
            let id = try await enqueue(setup, "medico-1", .resposta, text: "de volta")
            try await runWorker(setup, sender: sender(setup)) { _ in try await untilSettled(setup, [id]) }
            #expect(try await state(setup, id) == "enviada SENT 0")
        }
    }

    // MARK: - Contact cap

    @Test func theCapRefusesACampaignOverTwoContactsInARollingWeek() async throws {
        try await withSetup { setup in
            // medico-cheio: two contacts in the last 7 days (and an older one that no longer
            // counts). medico-meio: one in the window, one just out of it.
            try await contacts(setup, "medico-cheio", ago: ["6 days 23 hours", "1 hour", "7 days 1 minute"])
            try await contacts(setup, "medico-meio", ago: ["3 days", "7 days 1 minute"])
            let capped = try await enqueue(setup, "medico-cheio", .campanha, text: "campanha 3")
            let followup = try await enqueue(setup, "medico-cheio", .followup, text: "followup")
            let admitted = try await enqueue(setup, "medico-meio", .campanha, text: "campanha 2")
            try await runWorker(setup, sender: sender(setup)) { _ in
                try await untilSettled(setup, [capped, followup, admitted])
            }
            #expect(try await state(setup, capped) == "erro FAILED_GUARDRAIL guardrail:contact_cap_7d 1")
            #expect(try await scalar(setup, String.self, "SELECT ultimo_erro FROM fila_mensagens WHERE id = '\(capped.uuidString)'").contains("2 campaign contacts"))
            // The cap counts campaigns only.
            #expect(try await state(setup, followup) == "enviada SENT 0")
            #expect(try await state(setup, admitted) == "enviada SENT 0")
            #expect(Set(setup.evolution.sentTexts.map(\.text)) == ["followup", "campanha 2"])
            // The refused campaign spent none of its weight (2); the followup spent 1.
            #expect(try await budgetSpent(setup, "medico-cheio") == 1)
            #expect(try await budgetSpent(setup, "medico-meio") == 2)
            // The admitted campaign is now one of medico-meio's contacts; pruning left the
            // rows of the last 8 days.
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts WHERE cliente_id = 'medico-meio' AND contacted_at > now() - interval '7 days'") == 2)
            #expect(try await scalar(setup, Bool.self, "SELECT EXISTS (SELECT 1 FROM guardrail_contacts WHERE mensagem_id = '\(admitted.uuidString)')"))
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts WHERE mensagem_id = '\(capped.uuidString)'") == 0)
        }
    }

    @Test func theCapSwitchedOffOrRaisedInAppSettingsLetsCampaignsThrough() async throws {
        try await withSetup { setup in
            try await contacts(setup, "medico-1", ago: ["1 day", "2 days"])
            try await execute(setup, "INSERT INTO app_settings (key, value) VALUES ('guardrail.contact_cap_7d.enabled', 'false')")
            let off = try await enqueue(setup, "medico-1", .campanha, text: "com o limite desligado")
            try await runWorker(setup, sender: sender(setup, settings: AppSettings(client: setup.client, logger: logger))) { _ in
                try await untilSettled(setup, [off])
            }
            #expect(try await state(setup, off) == "enviada SENT 0")
            // Switched off, contacts are still counted: three now.
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts WHERE cliente_id = 'medico-1'") == 3)

            // On again with N = 4: a fourth contact goes, a fifth does not.
            try await execute(setup, "UPDATE app_settings SET value = 'true' WHERE key = 'guardrail.contact_cap_7d.enabled'")
            try await execute(setup, "INSERT INTO app_settings (key, value) VALUES ('guardrail.contact_cap_7d.limit', '4')")
            // Today's rate-limit budget is spent by now: give it back, so only the cap decides.
            try await execute(setup, "DELETE FROM rate_limit_counters")
            let fourth = try await enqueue(setup, "medico-1", .campanha, text: "quarta")
            try await runWorker(setup, sender: sender(setup, settings: AppSettings(client: setup.client, logger: logger))) { _ in
                try await untilSettled(setup, [fourth])
            }
            try await execute(setup, "DELETE FROM rate_limit_counters")
            let fifth = try await enqueue(setup, "medico-1", .campanha, text: "quinta")
            try await runWorker(setup, sender: sender(setup, settings: AppSettings(client: setup.client, logger: logger))) { _ in
                try await untilSettled(setup, [fifth])
            }
            #expect(try await state(setup, fourth) == "enviada SENT 0")
            #expect(try await state(setup, fifth) == "erro FAILED_GUARDRAIL guardrail:contact_cap_7d 1")
            #expect(setup.evolution.sentTexts.map(\.text) == ["com o limite desligado", "quarta"])
        }
    }

    @Test func theDefaultPolicyAndItsSettings() {
        #expect(GuardrailPolicy() == GuardrailPolicy(contactCapEnabled: true, contactCapLimit: 2))
        let (policy, problems) = GuardrailPolicy().applying(["guardrail.contact_cap_7d.enabled": false, "guardrail.contact_cap_7d.limit": 5])
        #expect(policy == GuardrailPolicy(contactCapEnabled: false, contactCapLimit: 5))
        #expect(problems.isEmpty)
        let (unchanged, bad) = GuardrailPolicy().applying(["guardrail.contact_cap_7d.enabled": "no", "guardrail.contact_cap_7d.limit": -1])
        #expect(unchanged == GuardrailPolicy())
        #expect(bad == ["guardrail.contact_cap_7d.enabled must be true or false", "guardrail.contact_cap_7d.limit must be a whole number, 0-1000"])
    }

    /// A contact taken for a message that surely did not go out is given back: the doctor
    /// keeps the slot for a message that does.
    @Test func aContactIsGivenBackWhenTheMessageSurelyDidNotGoOut() async throws {
        try await withSetup { setup in
            let rejected = try await enqueue(setup, "medico-sem-whatsapp", .campanha, text: "número inválido")
            let phone = try await scalar(setup, String.self, "SELECT telefone FROM fila_mensagens WHERE id = '\(rejected.uuidString)'")
            setup.evolution.numbersNotOnWhatsApp = [phone]
            // medico-sem-budget has spent today's budget: the campaign is deferred by the limiter.
            try await execute(setup, "INSERT INTO rate_limit_counters (cliente_id, janela, usado) VALUES ('medico-sem-budget', (now() AT TIME ZONE 'America/Sao_Paulo')::date, 3)")
            let limited = try await enqueue(setup, "medico-sem-budget", .campanha, text: "sem budget")
            try await runWorker(setup, sender: sender(setup)) { _ in
                try await untilSettled(setup, [rejected])
                try await eventually("the campaign is deferred by the rate limit") {
                    try await scalar(setup, String.self, "SELECT coalesce(outcome, '') FROM fila_mensagens WHERE id = '\(limited.uuidString)'") == "FAILED_RATE_LIMIT"
                }
            }
            #expect(try await state(setup, rejected) == "erro FAILED_VALIDATION evolution:number_not_on_whatsapp 1")
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts") == 0)
        }
    }

    // MARK: - Concurrency

    /// Two workers checking the doctor's last slot at once: the second waits for the first
    /// to commit its contact, then sees it and refuses. Without the per-doctor lock the
    /// second would count without the first's uncommitted row and pass.
    @Test func theLastSlotGoesToOneOfTwoConcurrentChecks() async throws {
        try await withSetup { setup in
            try await contacts(setup, "medico-1", ago: ["1 day"])
            let first = try await enqueue(setup, "medico-1", .campanha, text: "a")
            let second = try await enqueue(setup, "medico-1", .campanha, text: "b")
            let claimed = try await setup.queue.claim(workerID: "w-test", limit: 2, logger: logger)
            let secondMessage = try #require(claimed.first { $0.id == second })
            let guardrails = Guardrails(client: setup.client, timeout: .seconds(60), logger: logger)
            let finished = Flag()
            let racing = try await setup.client.withTransaction(logger: logger) { connection in
                let rows = try await connection.query("SELECT refused_by, counted FROM fila_guardrails_check(\(first), true, 2, 'w-a')", logger: logger)
                for try await (refusedBy, counted) in rows.decode((String?, Bool).self) {
                    #expect(refusedBy == nil && counted)
                }
                let racing = Task {
                    defer { finished.set() }
                    return try await guardrails.check(secondMessage, logger: logger)
                }
                // The second check waits on the lock while the first's transaction is open.
                try await Task.sleep(for: .milliseconds(500))
                #expect(!finished.value)
                return racing
            }
            #expect(try await racing.value == .refused(.contactCap7d, contacts: 2))
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts WHERE cliente_id = 'medico-1'") == 2)
            // Checked again, it is still refused, and a retry of the first keeps its contact.
            #expect(try await guardrails.check(secondMessage, logger: logger) == .refused(.contactCap7d, contacts: 2))
            let firstMessage = try #require(claimed.first { $0.id == first })
            guard case .allowed(let again) = try await guardrails.check(firstMessage, logger: logger) else {
                Issue.record("a retry of an admitted campaign was refused"); return
            }
            #expect(!again.counted && again.contacts == 2)
        }
    }

    @Test func manyConcurrentChecksAdmitExactlyTheCap() async throws {
        try await withSetup { setup in
            var ids: [UUID] = []
            for index in 0..<20 { ids.append(try await enqueue(setup, "medico-1", .campanha, text: "c\(index)")) }
            let claimed = try await setup.queue.claim(workerID: "w-test", limit: 20, logger: logger)
            #expect(claimed.count == 20)
            let guardrails = Guardrails(client: setup.client, timeout: .seconds(60), logger: logger)
            let verdicts = try await withThrowingTaskGroup(of: Guardrails.Verdict.self) { group in
                for message in claimed { group.addTask { try await guardrails.check(message, logger: logger) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let allowed = verdicts.filter { if case .allowed = $0 { true } else { false } }
            #expect(allowed.count == 2)
            #expect(verdicts.filter { $0 == .refused(.contactCap7d, contacts: 2) }.count == 18)
            #expect(try await scalar(setup, Int.self, "SELECT count(*)::int8 FROM guardrail_contacts WHERE cliente_id = 'medico-1'") == 2)
        }
    }

    // MARK: - Bypass

    @Test func aBypassLetsAMessagePastEveryGuardrailWithAnAuditRowEach() async throws {
        try await withSetup { setup in
            try await execute(setup, "SELECT ops.block_medico('medico-1', 'férias')")
            try await contacts(setup, "medico-1", ago: ["1 day", "2 days"])
            // Who is stamped by the database, whatever the insert says.
            let bypassed = try await scalar(setup, UUID.self, """
                INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, guardrail_bypass_motivo, guardrail_bypass_por)
                VALUES ('medico-1', '5511900000001', 'plantão urgente', 'campanha', 'escala de plantão mudou hoje', 'alguém-inventado')
                RETURNING id
                """)
            let plain = try await enqueue(setup, "medico-1", .campanha, text: "sem bypass")
            let login = try await scalar(setup, String.self, "SELECT session_user::text")
            var workerID = ""
            try await runWorker(setup, sender: sender(setup)) { identity in
                workerID = identity.id
                try await untilSettled(setup, [bypassed, plain])
            }
            #expect(try await state(setup, bypassed) == "enviada SENT 0")
            #expect(try await state(setup, plain) == "erro FAILED_GUARDRAIL guardrail:blocked 1")
            #expect(setup.evolution.sentTexts.map(\.text) == ["plantão urgente"])
            #expect(try await scalar(setup, String.self, "SELECT guardrail_bypass_por FROM fila_mensagens WHERE id = '\(bypassed.uuidString)'") == login)
            let rows = try await setup.client.query(
                "SELECT mensagem_id, cliente_id, guardrail, motivo, bypassed_by, worker_id, bypassed_at <= now() FROM guardrail_bypasses ORDER BY guardrail",
                logger: logger
            ).collect()
            #expect(rows.count == 2)
            var guardrails: [String] = []
            for row in rows {
                let (message, doctor, guardrail, motivo, by, worker, past) = try row.decode((UUID, String, String, String, String, String, Bool).self)
                #expect(message == bypassed && doctor == "medico-1" && motivo == "escala de plantão mudou hoje" && by == login && worker == workerID && past)
                guardrails.append(guardrail)
            }
            #expect(guardrails == ["blocked", "contact_cap_7d"])
            // The bypassed campaign is a contact like any other.
            #expect(try await scalar(setup, Bool.self, "SELECT EXISTS (SELECT 1 FROM guardrail_contacts WHERE mensagem_id = '\(bypassed.uuidString)')"))
        }
    }

    /// A producer's role with INSERT on the queue cannot set a bypass, on insert or later;
    /// a member of fila_guardrail_bypass can, and is recorded by its login.
    @Test func onlyAMemberOfTheBypassRoleCanSetABypass() async throws {
        try await withSetup { setup in
            let role = "produtor_\(UInt32.random(in: 0...UInt32.max))"
            try await execute(setup, "CREATE ROLE \(role) NOLOGIN")
            do {
                try await execute(setup, "GRANT SELECT, INSERT, UPDATE ON fila_mensagens TO \(role)")
                let insert = "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, guardrail_bypass_motivo) VALUES ('medico-1', '5511900000001', 'x', 'campanha', 'porque sim')"
                let refused = await sqlState(setup, as: role, insert)
                #expect(refused == "42501")
                let later = await sqlState(setup, as: role, """
                    INSERT INTO fila_mensagens (id, cliente_id, telefone, conteudo) VALUES ('00000000-0000-0000-0000-0000000000a1', 'medico-1', '5511900000001', 'x');
                    UPDATE fila_mensagens SET guardrail_bypass_motivo = 'depois' WHERE id = '00000000-0000-0000-0000-0000000000a1'
                    """)
                #expect(later == "42501")
                // An ordinary insert works for the same role.
                #expect(await sqlState(setup, as: role, "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo) VALUES ('medico-1', '5511900000001', 'x')") == nil)

                try await execute(setup, "GRANT fila_guardrail_bypass TO \(role)")
                #expect(await sqlState(setup, as: role, insert) == nil)
                #expect(try await scalar(setup, String.self, "SELECT guardrail_bypass_por || ' ' || (guardrail_bypass_em IS NOT NULL) FROM fila_mensagens WHERE guardrail_bypass_motivo = 'porque sim'")
                    == (try await scalar(setup, String.self, "SELECT session_user::text")) + " true")
            } catch {
                try? await dropRole(setup, role)
                throw error
            }
            try await dropRole(setup, role)
        }
    }

    func dropRole(_ setup: Setup, _ role: String) async throws {
        try await execute(setup, "DROP OWNED BY \(role)")
        try await execute(setup, "DROP ROLE \(role)")
    }

    /// Runs `sql` as `role` in a transaction that commits when it succeeds; the SQLSTATE it
    /// failed with, or nil.
    func sqlState(_ setup: Setup, as role: String, _ sql: String) async -> String? {
        do {
            try await setup.client.withTransaction(logger: logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL ROLE \(role)"), logger: logger)
                for statement in sql.split(separator: ";") {
                    _ = try await connection.query(PostgresQuery(unsafeSQL: String(statement)), logger: logger).collect()
                }
            }
            return nil
        } catch let error as PostgresTransactionError {
            return (error.closureError as? PSQLError)?.serverInfo?[.sqlState] ?? "?"
        } catch let error as PSQLError {
            return error.serverInfo?[.sqlState]
        } catch {
            return "?"
        }
    }
}

private final class Flag: Sendable {
    private let state = Mutex(false)
    var value: Bool { state.withLock { $0 } }
    func set() { state.withLock { $0 = true } }
}
