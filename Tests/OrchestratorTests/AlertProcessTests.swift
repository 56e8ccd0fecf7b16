import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

private let logger = TestDatabase.logger

/// The alerts as separate `fila` processes raise and deliver them: a dead scheduler reported
/// by a worker, two evaluators notifying once, the dead man's switch. Thresholds are shortened
/// through app_settings and time is moved in the rows (a dead process's heartbeat backdated),
/// as in every test here.
@Suite("Alerts from running processes", .migratedDatabase, .serialized, .timeLimit(.minutes(3)))
struct AlertProcessTests {
    private func environment(_ url: DatabaseURL, _ extra: [String: String] = [:]) -> [String: String] {
        ["DATABASE_URL": url.connectionString, "FILA_SENDER": "sandbox", "LOG_LEVEL": "info"].merging(extra) { _, new in new }
    }

    private func execute(_ client: PostgresClient, _ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    private func waitUntil(_ what: String, seconds: Double = 60, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSetupError("timed out waiting for \(what)")
    }

    private func count(_ client: PostgresClient, _ sql: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first?.decode(Int.self) ?? 0
    }

    /// Rules evaluated every second, and processes judged dead after 30 s of silence.
    private func shortenThresholds(_ client: PostgresClient, _ more: String = "") async throws {
        try await execute(client, """
            INSERT INTO app_settings (key, value) VALUES
                ('alert.evaluation_interval_seconds', '1'),
                ('heartbeat.timeout_seconds', '30'),
                ('alert.scheduler_sem_heartbeat.after_seconds', '10')\(more)
            """)
    }

    private func stop(_ fila: RunningFila) async {
        fila.signal(SIGTERM)
        let output = await fila.waitForExit()
        #expect(output.status == 0, "\(output.standardError.suffix(2000))")
    }

    /// "Who watches the watcher": the scheduler is SIGKILLed, and the worker, which has the
    /// webhook, raises `scheduler_sem_heartbeat` and posts it.
    @Test func aKilledSchedulerIsReportedByAWorker() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        try await shortenThresholds(client)
        let slack = try await FakeSlack.start()
        defer { Task { await slack.shutdown() } }
        let scheduler = try FilaProcess.start(["scheduler"], environment: environment(url))
        let worker = try FilaProcess.start(["worker"], environment: environment(url, ["SLACK_WEBHOOK_URL": slack.webhookURL]))
        try await waitUntil("both heartbeats") {
            try await count(client, "SELECT count(*)::int8 FROM worker_heartbeats WHERE kind IN ('scheduler', 'worker') AND status = 'running'") == 2
        }
        // Both alive: several rounds pass without an alert.
        try await Task.sleep(for: .seconds(3))
        #expect(try await count(client, "SELECT count(*)::int8 FROM alert_events WHERE rule = 'scheduler_sem_heartbeat'") == 0)

        scheduler.signal(SIGKILL)
        _ = await scheduler.waitForExit()
        // Its last beat, moved a minute back: dead by the 30 s timeout and past the 10 s
        // grace. The condition holds from this statement on.
        let since = try #require(
            try await client.query(
                "UPDATE worker_heartbeats SET last_seen_at = now() - interval '60 seconds' WHERE kind = 'scheduler' RETURNING clock_timestamp()",
                logger: logger
            ).collect().first?.decode(Date.self)
        )
        try await waitUntil("the Slack post, recorded") {
            try await count(client, "SELECT count(*)::int8 FROM alert_events WHERE rule = 'scheduler_sem_heartbeat' AND status = 'sent'") == 1
        }
        let (sentAt, reporter) = try #require(
            try await client.query(
                "SELECT sent_at, payload->'details'->>'detectado_por' FROM alert_events WHERE rule = 'scheduler_sem_heartbeat' AND status = 'sent'",
                logger: logger
            ).collect().first?.decode((Date, String).self)
        )
        let workerID = try #require(
            try await client.query("SELECT id FROM worker_heartbeats WHERE kind = 'worker'", logger: logger).collect().first?.decode(String.self)
        )
        #expect(reporter == workerID)
        print("scheduler_sem_heartbeat detection time (condition true to Slack ok, 1 s evaluation): \(sentAt.timeIntervalSince(since)) s")
        #expect(slack.messages.filter { $0.contains("scheduler_sem_heartbeat") }.count == 1)
        await stop(worker)
    }

    /// Two evaluator processes see the same conditions every second (a dead scheduler, and a
    /// circuit left forced open): for each, one notification, one reminder after the
    /// cooldown, one resolution; and every notification posted once, by one of the two.
    @Test func twoEvaluatorsNotifyOnceKeepTheCooldownAndResolveOnce() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        try await shortenThresholds(client)
        // A scheduler that died five minutes ago; a circuit forced open 20 minutes ago.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at) VALUES ('s-dead', 'scheduler', 'railway', 9, 't', now() - interval '5 minutes')")
        try await execute(client, "INSERT INTO circuit_overrides (circuit_name, state, reason, created_at) VALUES ('evolution', 'FORCED_OPEN', 'manutenção', now() - interval '20 minutes')")
        let slack = try await FakeSlack.start()
        defer { Task { await slack.shutdown() } }
        let extra = ["SLACK_WEBHOOK_URL": slack.webhookURL]
        let workers = [try FilaProcess.start(["worker"], environment: environment(url, extra)), try FilaProcess.start(["worker"], environment: environment(url, extra))]
        let rules = ["scheduler_sem_heartbeat", "circuito_aberto"]
        /// Notifications by rule and kind, e.g. "circuito_aberto firing 2".
        let events = {
            try await client.query(
                "SELECT rule || ' ' || kind || ' ' || count(*) FROM alert_events GROUP BY rule, kind ORDER BY 1",
                logger: logger
            ).collect().map { try $0.decode(String.self) }
        }

        try await waitUntil("the first posts") { slack.posts.count == 2 }
        // Each process evaluates every second: five more rounds each, all within the cooldowns.
        try await Task.sleep(for: .seconds(5))
        #expect(try await events() == ["circuito_aberto firing 1", "scheduler_sem_heartbeat firing 1"])

        // The last notifications moved back past their cooldowns (30 and 60 minutes): one
        // reminder each, then quiet again.
        try await execute(client, "UPDATE alert_state SET last_notified_at = last_notified_at - interval '61 minutes'")
        try await waitUntil("the reminders") { slack.posts.count == 4 }
        try await Task.sleep(for: .seconds(3))
        #expect(try await events() == ["circuito_aberto firing 2", "scheduler_sem_heartbeat firing 2"])

        // A scheduler beats and the circuit is released: resolved, once each, after
        // staying clear for 2 s.
        for rule in rules {
            try await execute(client, "INSERT INTO app_settings (key, value) VALUES ('alert.\(rule).resolve_after_seconds', '2')")
        }
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('s-new', 'scheduler', 'railway', 10, 't')")
        try await execute(client, "SELECT ops.release_circuit('evolution')")
        try await waitUntil("the resolutions") { slack.posts.count == 6 }
        try await Task.sleep(for: .seconds(3))
        #expect(try await events() == ["circuito_aberto firing 2", "circuito_aberto resolved 1", "scheduler_sem_heartbeat firing 2", "scheduler_sem_heartbeat resolved 1"])
        #expect(slack.posts.count == 6, "every event posted once, by one of the two processes")
        #expect(slack.messages.filter { $0.contains("Resolvido") }.count == 2)
        for worker in workers { await stop(worker) }
    }

    /// `FILA_DEADMAN_URL`: the scheduler GETs it after each healthy round; a worker does not.
    @Test func theSchedulerPingsTheDeadmanSwitch() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        try await shortenThresholds(client)
        let pings = Mutex<[String]>([])
        let server = try await FakeHTTPServer.start { request in
            pings.withLock { $0.append("\(request.method) \(request.path)") }
            return FakeResponse(status: 200, contentType: "text/plain", body: "OK")
        }
        defer { Task { await server.shutdown() } }
        let deadman = "\(server.baseURL)/ping/0b1c2d3e-fila"
        let worker = try FilaProcess.start(["worker"], environment: environment(url, ["FILA_DEADMAN_URL": deadman]))
        try await Task.sleep(for: .seconds(3))
        #expect(pings.withLock { $0 }.isEmpty, "only the scheduler pings")
        let scheduler = try FilaProcess.start(["scheduler"], environment: environment(url, ["FILA_DEADMAN_URL": deadman]))
        try await waitUntil("two pings") { pings.withLock { $0.count } >= 2 }
        #expect(Set(pings.withLock { $0 }) == ["GET /ping/0b1c2d3e-fila"])
        await stop(scheduler)
        await stop(worker)
        #expect(!scheduler.standardErrorSoFar.contains("0b1c2d3e"), "the URL is a secret")
    }

    /// Every rule from a running `fila scheduler` to Slack, each condition made true at one
    /// instant through the rows; prints how long each took (the note's detection times under
    /// shortened thresholds). The checks that run as jobs are asked for at once with psql, as
    /// their next slot would; the rules every process evaluates run each second.
    @Test func everyRuleReachesSlackAndItsDetectionTimeIsMeasured() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        try await shortenThresholds(client, ", ('alert.worker_sem_heartbeat.due_seconds', '0')")
        let slack = try await FakeSlack.start()
        defer { Task { await slack.shutdown() } }
        let scheduler = try FilaProcess.start(["scheduler"], environment: environment(url, ["SLACK_WEBHOOK_URL": slack.webhookURL]))
        try await waitUntil("the jobs synced") {
            try await count(client, "SELECT (SELECT count(*) FROM job_definitions) * (SELECT count(*) FROM worker_heartbeats WHERE kind = 'scheduler')") > 0
        }
        let since = try #require(try await client.query("SELECT clock_timestamp()", logger: logger).collect().first?.decode(Date.self))
        // No worker runs, and: 60 messages due for 40 minutes (fila_acumulada, and
        // worker_sem_heartbeat); 11 provider errors just now (erros_acumulados, and
        // mensagens_nao_enviadas); a daily job that never succeeded in two days
        // (job_atrasado); a circuit forced open 20 minutes ago and forgotten (circuito_aberto).
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, agendar_para)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'Campanha', now() - interval '40 minutes' FROM generate_series(1, 60) i
            """)
        try await execute(client, """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, tentativas, outcome, outcome_reason_code, outcome_at, ultimo_erro)
            SELECT 'medico-e' || i, '5531' || lpad(i::text, 9, '0'), 'x', 'erro', 3, 'FAILED_PROVIDER', 'http_500', now(), 'HTTP 500' FROM generate_series(1, 11) i
            """)
        try await execute(client, "UPDATE job_definitions SET created_at = now() - interval '3 days' WHERE name = 'limpar-fila-antiga'")
        try await execute(client, "INSERT INTO circuit_overrides (circuit_name, state, reason, created_at) VALUES ('evolution', 'FORCED_OPEN', 'manutenção', now() - interval '20 minutes')")
        try await execute(client, "INSERT INTO job_executions (job_name) VALUES ('verificar-fila-acumulada'), ('verificar-heartbeats'), ('verificar-erros-acumulados')")

        let rules = ["fila_acumulada", "worker_sem_heartbeat", "erros_acumulados", "mensagens_nao_enviadas", "job_atrasado", "circuito_aberto"]
        try await waitUntil("every rule posted", seconds: 90) {
            try await count(client, "SELECT count(DISTINCT rule)::int8 FROM alert_events WHERE status = 'sent' AND kind = 'firing'") == rules.count
        }
        var detected: [String: Double] = [:]
        for try await (rule, sentAt) in try await client.query("SELECT rule, min(sent_at) FROM alert_events WHERE status = 'sent' GROUP BY rule", logger: logger).decode((String, Date).self) {
            detected[rule] = sentAt.timeIntervalSince(since)
        }
        #expect(Set(detected.keys) == Set(rules))
        for rule in rules {
            print("detection time of \(rule) (condition true to Slack ok, shortened thresholds): \(String(format: "%.2f", detected[rule] ?? -1)) s")
            #expect(slack.messages.filter { $0.contains("`\(rule)`") || $0.contains(rule) }.count >= 1, "no post names \(rule)")
        }
        // One notification per rule and key: nothing was sent twice.
        #expect(try await count(client, "SELECT count(*)::int8 - count(DISTINCT (rule, key))::int8 FROM alert_events WHERE kind = 'firing'") == 0)
        await stop(scheduler)
    }
}
