import Database
import FilaTestSupport
import Foundation
import Jobs
import Logging
import Observability
import PostgresNIO
import Synchronization
import Testing

private let logger = TestDatabase.logger

/// A database with a client, plus helpers to act as one or more fila processes.
private struct Harness: Sendable {
    let client: PostgresClient
    let url: DatabaseURL

    /// A live process in worker_heartbeats (the scheduler fails runs of dead ones).
    func process(_ id: String, lastSeen: String = "now()", startedAt: String = "now()") async throws -> JobRunner {
        try await execute(
            "INSERT INTO worker_heartbeats (id, kind, host, pid, version, started_at, last_seen_at) VALUES ('\(id)', 'scheduler', 'test', 1, 'test', \(startedAt), \(lastSeen))"
        )
        return JobRunner(client: client, lockURL: url, workerID: id)
    }

    func scheduler(_ catalog: JobCatalog, runner: JobRunner, tick: Duration = .milliseconds(50)) -> JobScheduler {
        JobScheduler(catalog: catalog, runner: runner, configuration: .init(tickInterval: tick), logger: logger)
    }

    /// Lets new connections into this database, or refuses them (open ones carry on), as
    /// when a server is at its connection limit. Set from another database: a session
    /// cannot do it to its own.
    func allowConnections(_ allowed: Bool) async throws {
        try await TestDatabase.serverURL().withConnection(logger: logger) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(url.database) WITH ALLOW_CONNECTIONS \(allowed)"), logger: logger)
                .collect()
        }
    }

    func execute(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    func rows(_ sql: String) async throws -> [PostgresRow] {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
    }

    func int(_ sql: String) async throws -> Int {
        try await rows(sql).first!.decode(Int.self)
    }

    /// (status, triggered_by) of a job's executions, oldest slot first.
    func executions(_ job: String) async throws -> [(status: String, trigger: String, error: String?)] {
        try await rows("SELECT status, triggered_by, error FROM job_executions WHERE job_name = '\(job)' ORDER BY scheduled_for, created_at")
            .map { try $0.decode((String, String, String?).self) }
            .map { (status: $0.0, trigger: $0.1, error: $0.2) }
    }
}

extension Harness {
    /// The test's database (`.migratedDatabase(maximumConnections: 20)`).
    init() throws {
        self.init(client: try TestDatabase.current.client, url: try TestDatabase.current.url)
    }
}

private func job(
    _ name: String,
    _ schedule: JobSchedule = .every(seconds: 60),
    timeout: Duration = .seconds(30),
    handler: @escaping JobDefinition.Handler = { _ in ["ok": true] }
) -> JobDefinition {
    JobDefinition(name: name, schedule: schedule, description: "test job", sla: .seconds(5), timeout: timeout, handler: handler)
}

/// Runs the tick's claimed executions the way the scheduler service does.
private func tickAndRun(_ scheduler: JobScheduler) async throws -> [JobRunner.Outcome] {
    var outcomes: [JobRunner.Outcome] = []
    for (job, id) in try await scheduler.tick() {
        outcomes.append(try await scheduler.runner.run(job, executionID: id, logger: logger))
    }
    return outcomes
}

@Suite("Job scheduler on Postgres", .migratedDatabase(maximumConnections: 20))
struct SchedulerTests {
    /// Three replicas tick every 50 ms over an every-second job until three slots have run:
    /// every slot from the first to the last has exactly one row, run or (on a starved
    /// machine) recorded as skipped.
    @Test func threeReplicasRunEachSlotExactlyOnce() async throws {
        let harness = try Harness()
        let ran = Mutex<[Date]>([])
        let catalog = try JobCatalog([
            job("pulso", .every(seconds: 1)) { context in
                let slot = try await context.client.query("SELECT scheduled_for FROM job_executions WHERE id = \(context.executionID)", logger: logger)
                    .collect().first!.decode(Date.self)
                ran.withLock { $0.append(slot) }
                return [:]
            }
        ])
        var replicas: [JobScheduler] = []
        for index in 1...3 {
            replicas.append(harness.scheduler(catalog, runner: try await harness.process("replica-\(index)")))
        }
        // Until three slots have run (about three seconds; longer on a loaded machine).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for replica in replicas { group.addTask { try await replica.run() } }
            var succeeded = 0
            for _ in 0..<240 where succeeded < 3 {
                try await Task.sleep(for: .milliseconds(250))
                succeeded = try await harness.int("SELECT count(*) FROM job_executions WHERE job_name = 'pulso' AND status = 'success'")
            }
            group.cancelAll()
        }
        let slots = try await harness.rows(
            "SELECT scheduled_for, status, worker_id FROM job_executions WHERE job_name = 'pulso' ORDER BY scheduled_for"
        ).map { try $0.decode((Date, String, String).self) }
        // Every second from the first slot to the last has exactly one row: run, or (on a
        // machine so loaded that no replica ticked within a second) recorded as skipped.
        let seconds = slots.map { Int($0.0.timeIntervalSince1970) }
        #expect(seconds.count >= 3)
        #expect(seconds == Array(seconds[0]...seconds[seconds.count - 1]))
        // Slots claimed just before the replicas were cancelled may be left unstarted or
        // cut off (the scheduler picks those up later); every earlier one ran or was skipped.
        let settled = slots.reversed().drop { !["success", "skipped"].contains($0.1) }
        #expect(settled.allSatisfy { $0.1 == "success" || $0.1 == "skipped" }, "\(slots.map(\.1))")
        #expect(slots.count - settled.count <= 3, "\(slots.map(\.1))")
        let succeeded = slots.filter { $0.1 == "success" }.map(\.0)
        #expect(succeeded.count >= 3, "\(slots.map(\.1))")
        // Each run's handler ran once, for its own slot.
        #expect(ran.withLock { $0.sorted() } == succeeded)
    }

    @Test func aSlowJobNeverOverlapsItself() async throws {
        let harness = try Harness()
        // The job says when it has started and waits until the test lets it finish, so
        // the overlap is certain however slow the machine.
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
        let runs = Mutex(0)
        // A timeout far past the test's steps, however loaded the machine: the run must end
        // because the test lets it, not because its time ran out.
        let slow = job("lento", timeout: .seconds(600)) { _ in
            runs.withLock { $0 += 1 }
            startedContinuation.yield()
            for await _ in release { break }
            return ["done": true]
        }
        let catalog = try JobCatalog([slow])
        let a = try await harness.process("a")
        let b = try await harness.process("b")
        try await catalog.sync(client: harness.client, logger: logger)

        async let first = a.runNow(slow, trigger: .http, logger: logger)
        for await _ in started { break }
        // Another replica, asked directly: refused, nothing written.
        let second = try await b.runNow(slow, trigger: .cli, logger: logger)
        guard case .alreadyRunning = second else { Issue.record("expected alreadyRunning, got \(second)"); return }
        // The scheduler's slot comes due meanwhile: recorded as skipped, not run.
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() - interval '1 second' WHERE name = 'lento'")
        let scheduled = try await tickAndRun(harness.scheduler(catalog, runner: b))
        guard case .alreadyRunning = scheduled.first else { Issue.record("expected the slot skipped, got \(scheduled)"); return }

        releaseContinuation.yield()
        guard case .finished(let row) = try await first else { Issue.record("the first run did not finish"); return }
        #expect(row.status == .success)
        #expect(row.result == ["done": true])
        #expect(runs.withLock { $0 } == 1)
        let executions = try await harness.executions("lento")
        #expect(executions.filter { $0.status == "success" }.count == 1)
        #expect(executions.filter { $0.error == "the previous run was still going" }.map(\.status) == ["skipped"])
        // When a slot boundary passed between the UPDATE and the tick, the slots missed
        // meanwhile are recorded as skipped too; nothing else is.
        #expect(executions.allSatisfy { $0.status == "success" || $0.status == "skipped" }, "\(executions.map(\.status))")
    }

    /// A run asked for with psql while one is going is not skipped: it waits, and runs once
    /// the lock is free. Also when the lock is taken between the claim and the start.
    @Test func aRequestMadeWhileARunIsGoingRunsAfterIt() async throws {
        let harness = try Harness()
        let runs = Mutex(0)
        let quick = job("pedido") { _ in
            runs.withLock { $0 += 1 }
            return ["done": true]
        }
        let catalog = try JobCatalog([quick])
        try await catalog.sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1", startedAt: "now() - interval '5 minutes'"))

        // A run of the job is going (its row says so): the request is not even claimed.
        try await harness.execute("INSERT INTO job_executions (job_name, status, started_at, triggered_by, worker_id) VALUES ('pedido', 'running', now(), 'http', 's1')")
        try await harness.execute("INSERT INTO job_executions (job_name) VALUES ('pedido')")
        #expect(try await tickAndRun(scheduler).isEmpty)

        // Its row ended, but another session still holds the job's lock: claimed, found
        // locked, handed back; never skipped.
        try await harness.execute("UPDATE job_executions SET status = 'success', finished_at = now(), duration_ms = 1 WHERE status = 'running'")
        try await harness.client.withTransaction(logger: logger) { connection in
            // The runner's lock: class 'fila' 'jb' (0x66696A62), the name's hash.
            try await connection.query("SELECT pg_advisory_xact_lock(1718184546, hashtext('pedido'))", logger: logger)
            let outcomes = try await tickAndRun(scheduler)
            guard case .alreadyRunning = outcomes.first else { Issue.record("expected the lock held, got \(outcomes)"); return }
            let request = try await harness.executions("pedido").filter { $0.trigger == "psql" }
            #expect(request.map(\.status) == ["pending"])
        }
        // The lock is free: the request runs.
        let outcomes = try await tickAndRun(scheduler)
        guard case .finished(let row) = outcomes.first else { Issue.record("expected the request to run, got \(outcomes)"); return }
        #expect(row.status == .success)
        #expect(runs.withLock { $0 } == 1)
        #expect(try await harness.executions("pedido").filter { $0.trigger == "psql" }.map(\.status) == ["success"])
    }

    @Test func aRunWhoseProcessDiedIsMarkedFailed() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([job("orfao")])
        try await catalog.sync(client: harness.client, logger: logger)
        _ = try await harness.process("morto", lastSeen: "now() - interval '3 minutes'")
        _ = try await harness.process("parado")
        try await harness.execute("UPDATE worker_heartbeats SET status = 'stopped' WHERE id = 'parado'")
        _ = try await harness.process("vivo")
        for (worker, slot) in [("morto", 1), ("parado", 2), ("vivo", 3)] {
            try await harness.execute(
                """
                INSERT INTO job_executions (job_name, scheduled_for, status, started_at, triggered_by, worker_id)
                VALUES ('orfao', now() - interval '\(slot) minutes', 'running', now() - interval '90 seconds', 'scheduler', '\(worker)')
                """
            )
        }
        // Claimed but never started by the dead process.
        try await harness.execute(
            "INSERT INTO job_executions (job_name, scheduled_for, status, triggered_by, worker_id) VALUES ('orfao', now() - interval '4 minutes', 'pending', 'scheduler', 'morto')"
        )
        let survivor = harness.scheduler(catalog, runner: try await harness.process("sobrevivente"))
        _ = try await survivor.tick()
        #expect(try await harness.int("SELECT count(*) FROM job_executions WHERE status = 'failed' AND started_at IS NULL AND duration_ms IS NULL") == 1)
        try await harness.execute("DELETE FROM job_executions WHERE started_at IS NULL")
        let rows = try await harness.rows("SELECT worker_id, status, error, duration_ms FROM job_executions ORDER BY worker_id")
            .map { try $0.decode((String, String, String?, Int64?).self) }
        #expect(rows.map(\.0) == ["morto", "parado", "vivo"])
        #expect(rows.map(\.1) == ["failed", "failed", "running"])
        #expect(rows[0].2 == "the process running it (morto) stopped heart-beating")
        #expect(rows[0].3.map { $0 >= 90_000 } == true)
    }

    /// Ten hours without a scheduler: one catch-up run for the newest slot, the ones before
    /// it recorded as skipped. (Hourly, and checked against the slot the run got, so a clock
    /// boundary passing mid-test changes nothing.)
    @Test func afterDowntimeOneRunCatchesUpAndMissedSlotsAreSkipped() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([job("hora", .every(seconds: 3600))])
        try await catalog.sync(client: harness.client, logger: logger)
        let anchor = try await harness.rows(
            "UPDATE job_definitions SET next_run_at = date_trunc('hour', now()) - interval '10 hours' WHERE name = 'hora' RETURNING next_run_at"
        ).first!.decode(Date.self)
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1"))
        let outcomes = try await tickAndRun(scheduler)
        #expect(outcomes.count == 1)

        let rows = try await harness.rows("SELECT scheduled_for, status, triggered_by FROM job_executions WHERE job_name = 'hora' ORDER BY scheduled_for")
            .map { try $0.decode((Date, String, String).self) }
        guard let run = rows.last else { Issue.record("no executions"); return }
        #expect(run.1 == "success")
        #expect(run.0 >= anchor.addingTimeInterval(10 * 3600))
        // Every hour from the anchor to the run's slot: all skipped but the last.
        let hours = Int(run.0.timeIntervalSince(anchor) / 3600)
        #expect(rows.map(\.0) == (0...hours).map { anchor.addingTimeInterval(Double($0) * 3600) })
        #expect(rows.dropLast().allSatisfy { $0.1 == "skipped" && $0.2 == "scheduler" })
        let next = try await harness.rows("SELECT next_run_at FROM job_definitions WHERE name = 'hora'").first!.decode(Date.self)
        #expect(next == run.0.addingTimeInterval(3600))
        // Nothing more is due: a second tick runs nothing.
        #expect(try await tickAndRun(scheduler).isEmpty)
    }

    @Test func aJobDisabledWithSQLStopsAndResumes() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([job("pausavel")])
        try await catalog.sync(client: harness.client, logger: logger)
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1"))
        try await harness.execute("UPDATE job_definitions SET enabled = false, next_run_at = now() - interval '5 minutes' WHERE name = 'pausavel'")
        #expect(try await tickAndRun(scheduler).isEmpty)
        #expect(try await harness.int("SELECT count(*) FROM job_executions") == 0)
        // Its schedule moved on while disabled: to the next minute's slot, which may have
        // come already on a slow machine, but never the missed slots five minutes back.
        #expect(try await harness.int("SELECT count(*) FROM job_definitions WHERE next_run_at > now() - interval '1 minute'") == 1)

        // A restart (sync) leaves the operator's choice alone.
        try await catalog.sync(client: harness.client, logger: logger)
        #expect(try await harness.int("SELECT count(*) FROM job_definitions WHERE NOT enabled") == 1)

        try await harness.execute("UPDATE job_definitions SET enabled = true, next_run_at = now() - interval '1 second' WHERE name = 'pausavel'")
        #expect(try await tickAndRun(scheduler).count == 1)
        // One run; a slot boundary passing meanwhile adds a recorded skip, nothing else.
        let statuses = try await harness.executions("pausavel").map(\.status)
        #expect(statuses.filter { $0 == "success" }.count == 1 && statuses.allSatisfy { $0 == "success" || $0 == "skipped" }, "\(statuses)")
    }

    @Test func aRunRequestedWithPsqlIsPickedUp() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([job("manual") { context in ["execution": .string(context.executionID.uuidString.lowercased())] }])
        try await catalog.sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        try await harness.execute("INSERT INTO job_executions (job_name) VALUES ('manual')")
        try await harness.execute("INSERT INTO job_executions (job_name, created_at) VALUES ('nao-existe', now() - interval '3 minutes')")
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1", startedAt: "now() - interval '5 minutes'"))
        #expect(try await tickAndRun(scheduler).count == 1)
        #expect(try await harness.executions("manual").map { [$0.status, $0.trigger] } == [["success", "psql"]])
        let unknown = try await harness.executions("nao-existe")
        #expect(unknown.map(\.status) == ["failed"])
        #expect(unknown.first?.error == "no job named nao-existe (see job_definitions)")
    }

    /// A scheduled run gets a new correlation id, stored on its row and bound while its
    /// handler runs; a run requested with psql keeps the id its row was given.
    @Test func eachRunHasACorrelationID() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([
            job("marcado", .every(seconds: 3600)) { _ in ["seen": Correlation.current.map { .string($0.value) } ?? .null] }
        ])
        try await catalog.sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() - interval '1 second'")
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1"))
        #expect(try await tickAndRun(scheduler).count == 1)
        // The next slot is the next hour's: out of reach, so an hour turning mid-test adds no run.
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        try await harness.execute("INSERT INTO job_executions (job_name, correlation_id) VALUES ('marcado', 'pedido-psql-1')")
        #expect(try await tickAndRun(scheduler).count == 1)

        let runs = try await harness.rows("SELECT triggered_by, correlation_id, result->>'seen' FROM job_executions ORDER BY created_at")
            .map { try $0.decode((String, String?, String?).self) }
        #expect(runs.map(\.0) == ["scheduler", "psql"])
        let scheduled = try #require(runs.first?.1)
        #expect(UUID(uuidString: scheduled) != nil && scheduled == scheduled.lowercased())
        #expect(runs.first?.2 == scheduled)
        #expect(runs.last?.1 == "pedido-psql-1")
        #expect(runs.last?.2 == "pedido-psql-1")
    }

    /// A slot claimed while the database takes no new connections: the run's lock connection
    /// cannot open, so it never starts. The next tick records the slot as failed with the
    /// reason (through the pool's open connections), and once connections are allowed again
    /// the next slot runs.
    @Test(.timeLimit(.minutes(3))) func aClaimedRunWhoseLockConnectionCannotOpenIsFailed() async throws {
        let harness = try Harness()
        let catalog = try JobCatalog([job("diario")])
        try await catalog.sync(client: harness.client, logger: logger)
        let scheduler = harness.scheduler(catalog, runner: try await harness.process("s1"))
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() - interval '1 second'")
        let claimed = try await scheduler.tick()
        try #require(claimed.count == 1)
        // The failed start takes a while (the connect timeout): keep the next slot from
        // coming due meanwhile, so the next tick has only the failure to record.
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        try await harness.allowConnections(false)
        if let outcome = await scheduler.execute(claimed[0].0, executionID: claimed[0].1) {
            Issue.record("the run should not have started: \(outcome)")
        }
        // (A minute boundary passing mid-test adds a recorded skip; nothing else.)
        #expect(try await harness.executions("diario").map(\.status).filter { $0 != "skipped" } == ["pending"])

        _ = try await scheduler.tick()
        let lost = try await harness.executions("diario").filter { $0.status != "skipped" }
        #expect(lost.map(\.status) == ["failed"])
        #expect(lost.first?.error?.hasPrefix("the run never started: ") == true, "\(String(describing: lost.first?.error))")
        #expect(lost.first?.error?.contains("not currently accepting connections") == true, "\(String(describing: lost.first?.error))")

        try await harness.allowConnections(true)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() - interval '1 second'")
        for (job, id) in try await scheduler.tick() { await scheduler.execute(job, executionID: id) }
        #expect(try await harness.executions("diario").map(\.status).filter { $0 != "skipped" } == ["failed", "success"])
    }

    /// A psql request claimed by a scheduler whose start UPDATE fails (an operator holds the
    /// row in an open transaction, and the database has a lock_timeout): the row is failed
    /// with the reason as soon as the database lets a tick write it, not left pending
    /// under a live owner forever.
    @Test(.timeLimit(.minutes(3))) func aClaimedRunWhoseStartCannotBeWrittenIsFailed() async throws {
        let harness = try Harness()
        let ran = Mutex(false)
        let catalog = try JobCatalog([job("manual") { _ in ran.withLock { $0 = true }; return [:] }])
        try await catalog.sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        try await harness.execute("ALTER DATABASE \(harness.url.database) SET lock_timeout = '200ms'")
        _ = try await harness.process("s1")
        // The scheduler's pool opens its sessions after the setting: they have it.
        try await TestDatabase.withClient(harness.url) { client throws in
            let scheduler = JobScheduler(
                catalog: catalog, runner: JobRunner(client: client, lockURL: harness.url, workerID: "s1"), logger: logger
            )
            let id = try await harness.rows("INSERT INTO job_executions (job_name) VALUES ('manual') RETURNING id").first!.decode(UUID.self)
            let claimed = try await scheduler.tick()
            try #require(claimed.map(\.1) == [id])
            try await harness.url.withConnection(logger: logger) { (holder: PostgresConnection) async throws in
                try await holder.query("BEGIN", logger: logger)
                try await holder.query("SELECT 1 FROM job_executions WHERE id = \(id) FOR UPDATE", logger: logger)
                if let outcome = await scheduler.execute(claimed[0].0, executionID: id) {
                    Issue.record("the run should not have started: \(outcome)")
                }
                // While the row is held, the tick cannot write it either.
                await #expect(throws: (any Error).self) { _ = try await scheduler.tick() }
                try await holder.query("ROLLBACK", logger: logger)
            }
            _ = try await scheduler.tick()
        }
        let rows = try await harness.executions("manual")
        #expect(rows.map(\.status) == ["failed"])
        #expect(rows.first?.error?.hasPrefix("the run never started: ") == true, "\(String(describing: rows.first?.error))")
        #expect(rows.first?.error?.contains("lock timeout") == true, "\(String(describing: rows.first?.error))")
        #expect(ran.withLock { $0 } == false)
    }

    /// A request for a job that job_definitions lists (an older or newer fila declared it)
    /// but no running scheduler knows: failed with the reason once it waited
    /// `requestTimeout` (2 minutes) while a scheduler was running, never sooner.
    @Test func aRequestNoRunningSchedulerKnowsFailsAfterTheTimeout() async throws {
        let harness = try Harness()
        // Another version declared "antigo" once; the schedulers running now know only "atual".
        try await JobCatalog([job("antigo")]).sync(client: harness.client, logger: logger)
        let catalog = try JobCatalog([job("atual")])
        try await catalog.sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = now() + interval '1 hour'")
        try await harness.execute(
            """
            INSERT INTO job_executions (job_name, created_at) VALUES
                ('antigo', now() - interval '3 minutes'), ('antigo', now() - interval '30 seconds'),
                ('nao-existe', now() - interval '3 minutes'), ('atual', now() - interval '3 minutes')
            """
        )
        // A scheduler that came up 30 s ago has not watched the requests wait long enough.
        let newcomer = harness.scheduler(catalog, runner: try await harness.process("novo", startedAt: "now() - interval '30 seconds'"))
        let taken = try await newcomer.tick()
        #expect(taken.map(\.0.name) == ["atual"])
        #expect(try await harness.int("SELECT count(*) FROM job_executions WHERE status = 'pending' AND job_name <> 'atual'") == 3)
        // One running for 5 minutes has: the requests it does not know, 3 minutes old, fail.
        let veteran = harness.scheduler(catalog, runner: try await harness.process("veterano", startedAt: "now() - interval '5 minutes'"))
        #expect(try await veteran.tick().isEmpty)
        let antigo = try await harness.executions("antigo")
        #expect(antigo.map(\.status) == ["failed", "pending"])
        #expect(
            antigo.first?.error == "no running scheduler knows job antigo: nobody took the request in 120 s (is a fila version that has it running?)",
            "\(String(describing: antigo.first?.error))"
        )
        #expect(try await harness.executions("nao-existe").map { [$0.status, $0.error ?? ""] } == [["failed", "no job named nao-existe (see job_definitions)"]])
        // A known job's request is the newcomer's to run, never failed for waiting.
        #expect(try await harness.executions("atual").map(\.status) == ["pending"])
    }

    @Test func failuresAndTimeoutsAreRecorded() async throws {
        struct ProviderDown: Error, CustomStringConvertible {
            var description: String { "provider down" }
        }
        let harness = try Harness()
        let failing = job("falha") { _ in throw ProviderDown() }
        let hanging = job("trava", timeout: .milliseconds(200)) { _ in
            try await Task.sleep(for: .seconds(30))
            return [:]
        }
        _ = try JobCatalog([failing, hanging])
        let runner = try await harness.process("s1")
        guard case .finished(let failed) = try await runner.runNow(failing, trigger: .cli, logger: logger),
            case .finished(let timedOut) = try await runner.runNow(hanging, trigger: .http, logger: logger)
        else {
            Issue.record("runs did not finish")
            return
        }
        #expect(failed.status == .failed)
        #expect(failed.error == "provider down")
        #expect(failed.triggeredBy == .cli)
        #expect(timedOut.status == .timeout)
        #expect(timedOut.error == "still running after 0.2 seconds; cancelled")
        #expect(timedOut.durationMs.map { $0 < 5_000 } == true)
    }

    /// A handler that ignores cancellation does not hold its row past the timeout: the row
    /// says `timeout` while the handler is still stuck, and the lock stays held until the
    /// handler really ends.
    @Test(.timeLimit(.minutes(2))) func aTimeoutIsRecordedEvenWhenTheHandlerIgnoresCancellation() async throws {
        let harness = try Harness()
        // The handler blocks in a statement (not cancellable) on a lock the test holds. Its
        // timeout leaves a loaded machine time to send that statement before it passes.
        let stubborn = job("teimoso", timeout: .seconds(3)) { _ in
            try await harness.execute("SELECT pg_advisory_xact_lock(4242)")
            return [:]
        }
        let runner = try await harness.process("s1")
        try await harness.url.withConnection(logger: logger) { blocker in
            try await blocker.query("SELECT pg_advisory_lock(4242)", logger: logger)
            async let run = runner.runNow(stubborn, trigger: .cli, logger: logger)
            var status = ""
            for _ in 0..<600 where status != "timeout" {
                try await Task.sleep(for: .milliseconds(50))
                status = try await harness.rows("SELECT status FROM job_executions").first?.decode(String.self) ?? ""
            }
            #expect(status == "timeout")
            // The handler is still blocked, and the job still locked.
            #expect(try await harness.int("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 1)
            let second = try await runner.runNow(stubborn, trigger: .cli, logger: logger)
            // Unlocked before anything else: the pending run below waits for the handler.
            try await blocker.query("SELECT pg_advisory_unlock(4242)", logger: logger)
            guard case .alreadyRunning = second else {
                Issue.record("expected the lock to be held")
                return
            }
            guard case .finished(let row) = try await run else { Issue.record("no row"); return }
            #expect(row.status == .timeout)
        }
    }

    /// A row failed by a rescuer (its process looked dead) is not started afterwards.
    @Test func aRowFailedMeanwhileIsNotRun() async throws {
        let harness = try Harness()
        let ran = Mutex(false)
        let catalog = try JobCatalog([job("tarde") { _ in ran.withLock { $0 = true }; return [:] }])
        let runner = try await harness.process("s1")
        let id = try await harness.rows(
            "INSERT INTO job_executions (job_name, status, finished_at, error, worker_id) VALUES ('tarde', 'failed', now(), 'lost', 's1') RETURNING id"
        ).first!.decode(UUID.self)
        guard case .abandoned = try await runner.run(catalog["tarde"]!, executionID: id, logger: logger) else {
            Issue.record("expected abandoned")
            return
        }
        #expect(ran.withLock { $0 } == false)
        #expect(try await harness.executions("tarde").map(\.status) == ["failed"])
    }

    @Test func syncKeepsTheNextRunUnlessTheScheduleChanged() async throws {
        let harness = try Harness()
        let utc = TimeZone(identifier: "UTC")!
        try await JobCatalog([job("relatorio", try JobSchedule("0 6 * * *", timeZone: utc))]).sync(client: harness.client, logger: logger)
        try await harness.execute("UPDATE job_definitions SET next_run_at = '2030-01-01T06:00:00Z'")
        try await JobCatalog([job("relatorio", try JobSchedule("0 6 * * *", timeZone: utc))]).sync(client: harness.client, logger: logger)
        #expect(try await harness.int("SELECT count(*) FROM job_definitions WHERE next_run_at = '2030-01-01T06:00:00Z'") == 1)
        try await JobCatalog([job("relatorio", try JobSchedule("0 7 * * *", timeZone: utc))]).sync(client: harness.client, logger: logger)
        let row = try await harness.rows("SELECT schedule, extract(hour FROM next_run_at AT TIME ZONE 'UTC')::int, next_run_at > now() FROM job_definitions")
            .first!.decode((String, Int, Bool).self)
        #expect(row == ("cron 0 7 * * *", 7, true))
        #expect(throws: ScheduleError("two jobs are named relatorio")) {
            try JobCatalog([job("relatorio"), job("relatorio")])
        }
    }
}
