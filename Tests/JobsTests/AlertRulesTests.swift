import Database
import FilaTestSupport
import Foundation
import Jobs
import Logging
import Observability
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// The rules the built-in checks report, from the rows they read to the post the fake Slack
/// receives. Time is in the rows (past timestamps) and thresholds are shortened through
/// app_settings, as an operator would.
@Suite("Alert rules of the built-in checks", .migratedDatabase, .timeLimit(.minutes(2)))
struct AlertRulesTests {
    private let settings = BuiltinJobs.Settings(timeZone: TimeZone(identifier: "America/Sao_Paulo")!)

    /// Runs the built-in job `name` now, as the `cli-1` process, and expects it to succeed.
    private func run(_ name: String) async throws -> JobExecution {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let catalog = try JobCatalog(BuiltinJobs.all(settings: settings))
        let job = try #require(catalog[name])
        guard case .finished(let execution) = try await JobRunner(client: client, lockURL: url, workerID: "cli-1").runNow(job, trigger: .cli, logger: logger) else {
            throw TestSetupError("\(name) did not run")
        }
        #expect(execution.status == .success, "\(execution.error ?? "")")
        return execution
    }

    private func prepare() async throws -> PostgresClient {
        let client = try TestDatabase.current.client
        try await JobCatalog(BuiltinJobs.all(settings: settings)).sync(client: client, logger: logger)
        try await client.query("INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('cli-1', 'cli', 't', 1, 't')", logger: logger)
        return client
    }

    private func execute(_ client: PostgresClient, _ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    private func events(_ client: PostgresClient) async throws -> [String] {
        var result: [String] = []
        for try await (rule, kind) in try await client.query("SELECT rule, kind FROM alert_events ORDER BY id", logger: logger).decode((String, String).self) {
            result.append("\(rule) \(kind)")
        }
        return result
    }

    private func withSlack(_ body: (FakeSlack, AlertDeliveryService) async throws -> Void) async throws {
        let slack = try await FakeSlack.start()
        let notifier = SlackNotifier(url: try #require(SecretURL(slack.webhookURL)), timeout: .seconds(30))
        let delivery = AlertDeliveryService(client: try TestDatabase.current.client, notifier: notifier, configuration: .init(spacing: .zero), logger: logger)
        do {
            try await body(slack, delivery)
        } catch {
            try? await notifier.shutdown()
            await slack.shutdown()
            throw error
        }
        try await notifier.shutdown()
        await slack.shutdown()
    }

    /// 2026-01-23: a campaign was enqueued and no worker ran; nobody knew for three hours.
    @Test func theJanuaryIncidentReachesSlackNamingWorkerSemHeartbeat() async throws {
        let client = try await prepare()
        // Shortened thresholds: a worker is lost after 30 s without a heartbeat, and any due
        // message counts.
        try await execute(client, """
            INSERT INTO app_settings (key, value) VALUES
                ('heartbeat.timeout_seconds', '30'),
                ('alert.worker_sem_heartbeat.due_seconds', '0')
            """)
        // The worker's last beat was 45 s ago: alive under the default 2 min, lost under 30 s.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at) VALUES ('w-1', 'worker', 'railway', 7, 't', now() - interval '45 seconds')")
        try await withSlack { slack, delivery in
            // No worker, but nothing due: no alert.
            #expect(try await run("verificar-heartbeats").result?["alerta"] == false)

            try await execute(client, """
                INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo)
                SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'Campanha de janeiro', 'campanha' FROM generate_series(1, 40) i
                """)
            let check = try await run("verificar-heartbeats")
            #expect(check.result?["alerta"] == true)
            #expect(check.result?["pendentes_vencidas"] == 40)
            #expect(try await delivery.deliverDue().sent == 1)

            #expect(slack.messages.count == 1)
            let post = try #require(slack.messages.first)
            #expect(post.contains("worker_sem_heartbeat"))
            #expect(post.contains("40 mensagens"))

            // Detection time, on the rows: from the first message's enqueue to Slack's ok.
            let detection = try await client.query(
                """
                SELECT extract(epoch FROM e.sent_at - (SELECT min(created_at) FROM fila_mensagens))::float8
                  FROM alert_events e WHERE e.rule = 'worker_sem_heartbeat' AND e.status = 'sent'
                """,
                logger: logger
            ).collect().first?.decode(Double.self)
            let seconds = try #require(detection)
            print("worker_sem_heartbeat detection time (enqueue to Slack ok, shortened thresholds): \(seconds) s")
            #expect(seconds >= 0 && seconds < 30)

            // The next minute's check: still firing, within the cooldown, nobody is told again.
            _ = try await run("verificar-heartbeats")
            #expect(try await delivery.deliverDue().sent == 0)

            // A worker starts: the condition clears, but a flap is not a resolution yet.
            try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w-2', 'worker', 'railway', 8, 't')")
            #expect(try await run("verificar-heartbeats").result?["alerta"] == false)
            #expect(try await delivery.deliverDue().sent == 0)
            // Clear for over 2 minutes (in the row): one resolved post.
            try await execute(client, "UPDATE alert_state SET last_seen_at = last_seen_at - interval '3 minutes'")
            _ = try await run("verificar-heartbeats")
            #expect(try await delivery.deliverDue().sent == 1)
            #expect(slack.messages.count == 2)
            #expect(slack.messages.last?.contains("Resolvido") == true)
            #expect(try await events(client) == ["worker_sem_heartbeat firing", "worker_sem_heartbeat resolved"])
        }
    }

    @Test func messagesDueForLessThanTheGraceDoNotPageDuringARestart() async throws {
        let client = try await prepare()
        // Default grace of 120 s: messages due 60 s ago with no worker are not yet an alert.
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, agendar_para)
            VALUES ('medico-1', '5521999990001', 'oi', now() - interval '60 seconds')
            """)
        #expect(try await run("verificar-heartbeats").result?["alerta"] == false)
        try await execute(client, "UPDATE fila_mensagens SET agendar_para = now() - interval '3 minutes'")
        #expect(try await run("verificar-heartbeats").result?["alerta"] == true)
        #expect(try await events(client) == ["worker_sem_heartbeat firing"])
    }

    @Test func aBacklogFiresOnceWithinItsCooldownAndResolves() async throws {
        let client = try await prepare()
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w-1', 'worker', 't', 2, 't')")
        // Shortened through app_settings: 5 messages due for 10 minutes.
        try await execute(client, """
            INSERT INTO app_settings (key, value) VALUES ('alert.fila_acumulada.limit', '5'), ('alert.fila_acumulada.minutes', '10')
            """)
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, agendar_para)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x', now() - interval '15 minutes' FROM generate_series(1, 6) i
            """)
        try await withSlack { slack, delivery in
            let backlog = try await run("verificar-fila-acumulada")
            #expect(backlog.result?["acumulada"] == true)
            #expect(backlog.result?["limite"] == 5)
            _ = try await run("verificar-fila-acumulada")
            #expect(try await delivery.deliverDue().sent == 1)
            #expect(slack.messages.first?.contains("fila_acumulada") == true)
            #expect(slack.messages.first?.contains("6 mensagens atrasadas") == true)

            // An hour later (in the row), still a backlog: notified again.
            try await execute(client, "UPDATE alert_state SET last_notified_at = last_notified_at - interval '61 minutes'")
            _ = try await run("verificar-fila-acumulada")
            // The backlog is sent; the next check, 10 minutes later (in the row), resolves it.
            try await execute(client, "UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', outcome_at = now(), enviada_em = now()")
            try await execute(client, "UPDATE alert_state SET last_seen_at = last_seen_at - interval '10 minutes'")
            _ = try await run("verificar-fila-acumulada")
            #expect(try await delivery.deliverDue().sent == 2)
            #expect(try await events(client) == ["fila_acumulada firing", "fila_acumulada firing", "fila_acumulada resolved"])
        }
    }

    /// A message a guardrail refused ends `erro` with FAILED_GUARDRAIL (as the worker writes
    /// it): it was not sent, so mensagens_nao_enviadas counts it with its reason, while
    /// erros_acumulados does not (no provider failed).
    @Test func guardrailRefusalsAreCountedAsUnsentMessages() async throws {
        let client = try await prepare()
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, status, tentativas, outcome, outcome_reason_code, outcome_at, ultimo_erro) VALUES
                ('medico-1', '5521000000001', 'x', 'campanha', 'erro', 1, 'FAILED_GUARDRAIL', 'guardrail:contact_cap_7d', now() - interval '1 minute', 'cap'),
                ('medico-2', '5521000000002', 'x', 'followup', 'erro', 1, 'FAILED_GUARDRAIL', 'guardrail:blocked', now() - interval '1 minute', 'blocked')
            """)
        try await withSlack { slack, delivery in
            let check = try await run("verificar-erros-acumulados")
            #expect(check.result?["nao_enviadas"] == 2)
            #expect(check.result?["erros"] == 0)
            #expect(try await delivery.deliverDue().sent == 1)
            let unsent = try #require(slack.messages.first { $0.contains("mensagens_nao_enviadas") })
            #expect(unsent.contains("FAILED_GUARDRAIL · guardrail:contact_cap_7d: 1"))
            #expect(unsent.contains("FAILED_GUARDRAIL · guardrail:blocked: 1"))
        }
    }

    @Test func accumulatedErrorsFireWithTheirBreakdownAndUnsentMessagesAreNeverSilent() async throws {
        let client = try await prepare()
        // 11 provider errors in the last 5 minutes (retries waiting), a deferral that is not an
        // error, one error too old to count, and two messages that ended unsent.
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, tentativas, outcome, outcome_reason_code, outcome_at, agendar_para)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x', 'pendente', 1,
                   CASE WHEN i <= 8 THEN 'FAILED_PROVIDER' ELSE 'FAILED_TIMEOUT' END,
                   CASE WHEN i <= 8 THEN 'http_500' END,
                   now() - interval '1 minute', now() + interval '5 minutes'
              FROM generate_series(1, 11) i
            """)
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at, agendar_para) VALUES
                ('medico-20', '5521000000020', 'x', 'pendente', 'FAILED_CIRCUIT_OPEN', now(), now() + interval '1 minute'),
                ('medico-21', '5521000000021', 'x', 'pendente', 'FAILED_PROVIDER', now() - interval '10 minutes', now())
            """)
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, tentativas, outcome, outcome_reason_code, outcome_at, ultimo_erro) VALUES
                ('medico-30', '5521000000030', 'x', 'erro', 3, 'FAILED_VALIDATION', 'number_not_on_whatsapp', now() - interval '2 minutes', 'exists:false'),
                ('medico-31', '5521000000031', 'x', 'cancelada', 0, 'FAILED_EXPIRED', NULL, now() - interval '3 minutes', NULL),
                ('medico-32', '5521000000032', 'x', 'cancelada', 0, 'CANCELLED_MANUAL', NULL, now() - interval '3 minutes', NULL)
            """)
        try await withSlack { slack, delivery in
            // 11 retried errors, a validation error and an expiry (as ops.fila_metricas counts
            // errors): above the default of "more than 10".
            let check = try await run("verificar-erros-acumulados")
            #expect(check.result == ["erros": 13, "erros_limite": 10, "erros_acumulados": true, "nao_enviadas": 2])
            #expect(try await delivery.deliverDue().sent == 2)
            let errors = try #require(slack.messages.first { $0.contains("erros_acumulados") })
            #expect(errors.contains("FAILED_PROVIDER · http_500: 8"))
            #expect(errors.contains("FAILED_TIMEOUT: 3"))
            #expect(errors.contains("FAILED_VALIDATION · number_not_on_whatsapp: 1"))
            #expect(errors.contains("FAILED_EXPIRED: 1"))
            #expect(!errors.contains("FAILED_CIRCUIT_OPEN"))
            let unsent = try #require(slack.messages.first { $0.contains("mensagens_nao_enviadas") })
            #expect(unsent.contains("2 mensagens não enviadas"))
            #expect(unsent.contains("FAILED_EXPIRED: 1"))
            #expect(!unsent.contains("CANCELLED_MANUAL"))

            // A looser limit set with psql applies at the next check: the condition resolves.
            try await execute(client, "INSERT INTO app_settings (key, value) VALUES ('alert.erros_acumulados.limit', '20'), ('alert.erros_acumulados.resolve_after_seconds', '0')")
            #expect(try await run("verificar-erros-acumulados").result?["erros_acumulados"] == false)
            #expect(try await events(client) == ["erros_acumulados firing", "mensagens_nao_enviadas firing", "erros_acumulados resolved"])
        }
    }
}
