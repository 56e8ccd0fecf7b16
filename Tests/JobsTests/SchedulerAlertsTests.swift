import Database
import FilaTestSupport
import Foundation
import Jobs
import Logging
import Observability
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// The rules every process evaluates about the scheduler and its jobs, from the heartbeat
/// and job rows to the notifications queued. Time is in the rows (past timestamps), as the
/// evaluator sees it through the database's `now()`.
@Suite("Scheduler alert rules", .migratedDatabase, .timeLimit(.minutes(3)))
struct SchedulerAlertsTests {
    /// The API process doing the watching, started `startedAgo` ago.
    private func watcher(_ client: PostgresClient, startedAgo: String = "10 minutes") async throws -> ProcessIdentity {
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, started_at) VALUES ('api-1', 'api', 't', 1, 't', now() - interval '\(startedAgo)')")
        return ProcessIdentity(id: "api-1", kind: .api, host: "t", pid: 1, version: "t")
    }

    /// Runs `sql`, one statement at a time (statements end with `;` at the end of a line).
    private func execute(_ client: PostgresClient, _ sql: String) async throws {
        for statement in sql.components(separatedBy: ";\n") where !statement.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            try await client.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
    }

    private func evaluator(_ client: PostgresClient, _ watcher: ProcessIdentity) -> AlertEvaluator {
        AlertEvaluator(client: client, rules: [SchedulerAlerts.noScheduler(client: client, watcher: watcher), SchedulerAlerts.lateJobs(client: client)], logger: logger)
    }

    private func events(_ client: PostgresClient) async throws -> [String] {
        var result: [String] = []
        for try await (rule, key, kind) in try await client.query("SELECT rule, key, kind FROM alert_events ORDER BY id", logger: logger).decode((String, String, String).self) {
            result.append(key.isEmpty ? "\(rule) \(kind)" : "\(rule) \(key) \(kind)")
        }
        return result
    }

    @Test func aSchedulerSilentPastTheGraceFiresOnceAndResolvesWhenOneBeats() async throws {
        let client = try TestDatabase.current.client
        let evaluator = evaluator(client, try await watcher(client))
        // Killed 90 s ago: not alive (timeout 30 s), but within the 120 s grace.
        try await execute(client, "INSERT INTO app_settings (key, value) VALUES ('heartbeat.timeout_seconds', '30')")
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at) VALUES ('s-old', 'scheduler', 'railway', 5, 't', now() - interval '90 seconds')")
        var round = await evaluator.evaluate()
        #expect(round.isHealthy)
        #expect(round.queued.isEmpty)

        // Three minutes: past the grace.
        try await execute(client, "UPDATE worker_heartbeats SET last_seen_at = now() - interval '3 minutes' WHERE id = 's-old'")
        round = await evaluator.evaluate()
        #expect(round.queued.map(\.rule) == ["scheduler_sem_heartbeat"])
        let text = try #require(try await client.query("SELECT text FROM alert_events WHERE rule = 'scheduler_sem_heartbeat'", logger: logger).collect().first?.decode(String.self))
        #expect(text.contains("s-old"))
        #expect(text.contains("ops.workers"))
        // Every late job is inhibited meanwhile: one alert says why nothing runs.
        #expect(try await events(client) == ["scheduler_sem_heartbeat firing"])

        // Evaluated again (by this or any other process): within the cooldown, quiet.
        #expect(await evaluator.evaluate().queued.isEmpty)

        // A scheduler beats again: resolved, once.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('s-new', 'all', 'railway', 6, 't')")
        #expect(await evaluator.evaluate().queued.map(\.kind) == [.resolved])
        #expect(await evaluator.evaluate().queued.isEmpty)
        #expect(try await events(client) == ["scheduler_sem_heartbeat firing", "scheduler_sem_heartbeat resolved"])
    }

    @Test func aStoppedSchedulerGetsTheGraceAndNoSchedulerEverCountsFromTheWatchersStart() async throws {
        let client = try TestDatabase.current.client
        // The watcher started a minute ago and no scheduler ever ran: within the grace.
        let evaluator = evaluator(client, try await watcher(client, startedAgo: "1 minute"))
        #expect(await evaluator.evaluate().queued.isEmpty)
        // The grace is a setting.
        try await execute(client, "INSERT INTO app_settings (key, value) VALUES ('alert.scheduler_sem_heartbeat.after_seconds', '30')")
        #expect(await evaluator.evaluate().queued.map(\.rule) == ["scheduler_sem_heartbeat"])
        let text = try #require(try await client.query("SELECT text FROM alert_events", logger: logger).collect().first?.decode(String.self))
        #expect(text.contains("nenhum scheduler jamais registrado"))
    }

    @Test func aDeployRestartDoesNotPage() async throws {
        let client = try TestDatabase.current.client
        let evaluator = evaluator(client, try await watcher(client))
        // The old scheduler stopped 20 s ago (SIGTERM), the new one is not up yet.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, status, last_seen_at) VALUES ('s-1', 'scheduler', 'railway', 5, 't', 'stopped', now() - interval '20 seconds')")
        #expect(await evaluator.evaluate().queued.isEmpty)
        #expect(try await events(client).isEmpty)
    }

    @Test func aLateJobFiresPerJobWithTheSchedulersHeartbeats() async throws {
        let client = try TestDatabase.current.client
        let evaluator = evaluator(client, try await watcher(client))
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('s-1', 'scheduler', 'railway', 5, 't')")
        // Every minute, late after 2: last success 5 minutes ago, and the last run failed.
        try await execute(client, """
            INSERT INTO job_definitions (name, schedule, time_zone, sla_seconds, late_after_seconds, timeout_seconds, created_at)
            VALUES ('verificar-heartbeats', 'every 1m', 'UTC', 30, 120, 60, now() - interval '1 day'),
                   ('snapshot-metricas', 'every 5m', 'UTC', 30, 600, 60, now() - interval '1 day'),
                   ('limpar-fila-antiga', 'cron 0 3 * * *', 'UTC', 30, 172800, 60, now() - interval '1 day');
            INSERT INTO job_executions (job_name, started_at, finished_at, status, duration_ms, triggered_by)
            VALUES ('verificar-heartbeats', now() - interval '5 minutes', now() - interval '5 minutes', 'success', 10, 'scheduler'),
                   ('snapshot-metricas', now() - interval '4 minutes', now() - interval '4 minutes', 'success', 10, 'scheduler'),
                   ('limpar-fila-antiga', now() - interval '10 hours', now() - interval '10 hours', 'success', 10, 'scheduler');
            INSERT INTO job_executions (job_name, started_at, finished_at, status, duration_ms, error, triggered_by)
            VALUES ('verificar-heartbeats', now() - interval '1 minute', now() - interval '1 minute', 'failed', 10, 'relation does not exist', 'scheduler');
            """)
        let round = await evaluator.evaluate()
        #expect(round.isHealthy)
        #expect(round.queued.map(\.key) == ["verificar-heartbeats"])
        let (title, text, payload) = try #require(
            try await client.query("SELECT title, text, payload::text FROM alert_events WHERE rule = 'job_atrasado'", logger: logger).collect().first?.decode((String, String, String).self)
        )
        #expect(title == "Job verificar-heartbeats atrasado")
        #expect(text.contains("s-1"), "the schedulers' heartbeats are in the message")
        #expect(payload.contains("relation does not exist"), "the last error is in the fields")

        // A run over its SLA is late too.
        try await execute(client, "INSERT INTO job_executions (job_name, started_at, status, triggered_by) VALUES ('snapshot-metricas', now() - interval '2 minutes', 'running', 'scheduler')")
        #expect(await evaluator.evaluate().queued.map(\.key) == ["snapshot-metricas"])
        #expect(try await client.query("SELECT title FROM alert_events WHERE key = 'snapshot-metricas'", logger: logger).collect().first?.decode(String.self) == "Job snapshot-metricas acima do SLA")

        // Both succeed again: both resolve.
        try await execute(client, """
            UPDATE job_executions SET status = 'success', finished_at = now(), duration_ms = 1 WHERE status = 'running';
            INSERT INTO job_executions (job_name, started_at, finished_at, status, duration_ms, triggered_by)
            VALUES ('verificar-heartbeats', now(), now(), 'success', 10, 'scheduler');
            """)
        #expect(Set(await evaluator.evaluate().queued.map { "\($0.key) \($0.kind.rawValue)" }) == ["verificar-heartbeats resolved", "snapshot-metricas resolved"])
    }

    @Test func aFailingRuleLeavesTheOthersAndTheRoundIsNotHealthy() async throws {
        let client = try TestDatabase.current.client
        let broken = AlertRule(name: "quebrada", cooldown: .seconds(60)) { _, _ in
            try await client.query("SELECT * FROM tabela_que_nao_existe", logger: logger)
            return []
        }
        let evaluator = AlertEvaluator(client: client, rules: [broken, SchedulerAlerts.noScheduler(client: client, watcher: try await watcher(client))], logger: logger)
        let round = await evaluator.evaluate()
        #expect(round.failed == ["quebrada"])
        #expect(round.evaluated == ["scheduler_sem_heartbeat"])
        #expect(!round.isHealthy)
        #expect(round.queued.map(\.rule) == ["scheduler_sem_heartbeat"])
    }
}
