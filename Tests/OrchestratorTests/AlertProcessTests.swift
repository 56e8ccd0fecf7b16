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

    /// Two evaluator processes see the same condition every second: one notification, one
    /// reminder after the cooldown, one resolution.
    @Test func twoEvaluatorsNotifyOnceKeepTheCooldownAndResolveOnce() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        try await shortenThresholds(client)
        // A scheduler that died five minutes ago.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version, last_seen_at) VALUES ('s-dead', 'scheduler', 'railway', 9, 't', now() - interval '5 minutes')")
        let slack = try await FakeSlack.start()
        defer { Task { await slack.shutdown() } }
        let extra = ["SLACK_WEBHOOK_URL": slack.webhookURL]
        let workers = [try FilaProcess.start(["worker"], environment: environment(url, extra)), try FilaProcess.start(["worker"], environment: environment(url, extra))]
        let firing = { slack.messages.filter { $0.contains("scheduler_sem_heartbeat") && !$0.contains("Resolvido") }.count }

        try await waitUntil("the first post") { firing() == 1 }
        // Each process evaluates every second: five more rounds each, all within the cooldown.
        try await Task.sleep(for: .seconds(5))
        #expect(firing() == 1)

        // The last notification moved back past the 30-minute cooldown: one reminder, then
        // quiet again for another cooldown.
        try await execute(client, "UPDATE alert_state SET last_notified_at = last_notified_at - interval '31 minutes' WHERE rule = 'scheduler_sem_heartbeat'")
        try await waitUntil("the reminder") { firing() == 2 }
        try await Task.sleep(for: .seconds(3))
        #expect(firing() == 2)

        // A scheduler beats: resolved, once.
        try await execute(client, "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('s-new', 'scheduler', 'railway', 10, 't')")
        try await waitUntil("the resolution") { slack.messages.contains { $0.contains("Resolvido") } }
        try await Task.sleep(for: .seconds(3))
        #expect(slack.messages.filter { $0.contains("Resolvido") }.count == 1)
        #expect(try await count(client, "SELECT count(*)::int8 FROM alert_events WHERE rule = 'scheduler_sem_heartbeat'") == 3)
        #expect(slack.posts.count == 3, "every event posted once, by one of the two processes")
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
}
