#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle
import Synchronization

/// Runs periodic jobs on time, once per slot across every replica (seed T01.1, T01.2,
/// T01.5, T03.2, T03.6).
///
/// Any number of processes may run a scheduler. Each tick reads the database clock and the
/// `job_definitions` rows; a due slot belongs to the replica whose compare-and-set advances
/// `next_run_at`, and its `job_executions` row is unique per `(job_name, scheduled_for)`, so
/// a slot runs once by constraint, never because a leader decided. After downtime a job runs
/// once to catch up and the slots it missed are recorded as `skipped`. A job disabled with
/// psql (`enabled = false`) is not run from the next tick on; a `pending` row inserted with
/// psql is run within a tick. A run whose process stopped heart-beating is marked `failed`,
/// and so is a claimed run that could not start (its lock connection would not open, its
/// start could not be written): a slot is never left `pending` under a live owner that will
/// not run it. A psql request that no running scheduler takes is failed after
/// `Configuration.requestTimeout`, with the reason.
public struct JobScheduler: Service {
    public struct Configuration: Sendable {
        /// How often due slots and requested runs are looked for.
        public var tickInterval: Duration
        /// Missed slots recorded as `skipped` after downtime, at most (the newest).
        public var maximumSkippedSlots: Int
        /// A psql request (`INSERT INTO job_executions (job_name) …`) that no scheduler took
        /// while this one was running for this long is marked failed: no running scheduler
        /// knows its job. A scheduler that knows the job takes a request within a tick; the
        /// wait covers one that is briefly away (restarting, deploying, cut off from the
        /// database), for as long as the fleet takes to call a silent process dead: the
        /// heartbeat timeout (`fila_heartbeat_timeout()`), 2 minutes by default.
        public var requestTimeout: Duration

        public init(
            tickInterval: Duration = .seconds(1),
            maximumSkippedSlots: Int = 1000,
            requestTimeout: Duration = .seconds(120)
        ) {
            self.tickInterval = tickInterval
            self.maximumSkippedSlots = maximumSkippedSlots
            self.requestTimeout = requestTimeout
        }
    }

    public let catalog: JobCatalog
    public let runner: JobRunner
    public let configuration: Configuration
    let logger: Logger
    /// The runs this scheduler claimed and has not finished with.
    private let claims = ClaimedRuns()

    public init(catalog: JobCatalog, runner: JobRunner, configuration: Configuration = .init(), logger: Logger) {
        self.catalog = catalog
        self.runner = runner
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        var synced = false
        var failing = false
        logger.info("scheduler started", metadata: ["scheduler.jobs": .stringConvertible(catalog.jobs.count)])
        await withDiscardingTaskGroup { runs in
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do {
                    // A shutdown cuts off a tick still waiting on Postgres (an outage) instead
                    // of waiting for it: a slot claimed and not yet started is failed as
                    // never started, like the claims of any process that went away.
                    if !synced {
                        try await cancelWhenGracefulShutdown { [self] in try await catalog.sync(client: runner.client, logger: logger) }
                        synced = true
                    }
                    try await tick(startingRunsIn: &runs)
                    if failing {
                        logger.info("scheduler reaches the database again")
                        failing = false
                    }
                } catch {
                    if !failing && !Task.isShuttingDownGracefully {
                        logger.error("scheduler tick failed; retrying every tick", metadata: ["error": .string(String(reflecting: error))])
                        failing = true
                    }
                }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: configuration.tickInterval) }
            }
            // Runs in progress finish (or are cancelled when the shutdown time is up).
        }
        logger.info("scheduler stopped")
    }

    /// `tick(_:)` for `run()`: each claim starts its run in `runs` as soon as it is
    /// committed, while the tick, in a task of its own, goes on or is cut off by a shutdown.
    private func tick(startingRunsIn runs: inout DiscardingTaskGroup) async throws {
        let (claimed, handOver) = AsyncStream.makeStream(of: (JobDefinition, UUID).self)
        async let ticked: Void = cancelWhenGracefulShutdown { [self] in
            defer { handOver.finish() }
            try await tick { job, executionID in handOver.yield((job, executionID)) }
        }
        for await (job, executionID) in claimed {
            runs.addTask { _ = await self.execute(job, executionID: executionID) }
        }
        try await ticked
    }

    /// One pass: fail runs of dead processes and claimed runs of this one that never
    /// started, claim due slots and requested runs. Each claim is handed to `onClaim` as soon
    /// as it is committed, to be run with `execute(_:executionID:)`, and a failure with one
    /// job does not hold up the others.
    public func tick(_ onClaim: (JobDefinition, UUID) -> Void) async throws {
        try await failRunsOfLostProcesses()
        try await failClaimedRunsThatNeverStarted()
        for state in try await dueJobs() {
            guard let job = catalog[state.name] else { continue }
            do {
                if let id = try await claimSlots(of: job, state: state) {
                    claims.claimed(id)
                    onClaim(job, id)
                }
            } catch {
                logger.error("claiming a job's slot failed", metadata: ["job.name": .string(job.name), "error": .string(String(reflecting: error))])
            }
        }
        for (job, id) in try await claimRequestedRuns() {
            claims.claimed(id)
            onClaim(job, id)
        }
    }

    /// `tick(_:)`, returning the claims (for callers that run them themselves).
    public func tick() async throws -> [(JobDefinition, UUID)] {
        var claimed: [(JobDefinition, UUID)] = []
        try await tick { claimed.append(($0, $1)) }
        return claimed
    }

    /// Runs an execution this scheduler claimed. A run that throws before it started leaves
    /// its row `pending`; the next tick marks it failed with the reason (through the pool,
    /// retried every tick until the database takes it), so the slot is recorded, not lost.
    @discardableResult
    public func execute(_ job: JobDefinition, executionID: UUID) async -> JobRunner.Outcome? {
        do {
            let outcome = try await runner.run(job, executionID: executionID, logger: logger)
            claims.ended(executionID)
            return outcome
        } catch {
            logger.error("job run failed before it could start or be recorded", metadata: ["job.name": .string(job.name), "error": .string(String(reflecting: error))])
            claims.ended(executionID, failure: String(describing: error))
            return nil
        }
    }

    struct DueState {
        let name: String
        let enabled: Bool
        let nextRunAt: Date?
        let now: Date
    }

    /// Jobs of this catalog whose next slot has come (or was never set).
    private func dueJobs() async throws -> [DueState] {
        let names = catalog.jobs.map(\.name)
        var due: [DueState] = []
        let rows = try await runner.client.query(
            """
            SELECT name, enabled, next_run_at, now() FROM job_definitions
             WHERE name = ANY(\(names)) AND (next_run_at IS NULL OR next_run_at <= now())
            """,
            logger: logger
        )
        for try await (name, enabled, next, now) in rows.decode((String, Bool, Date?, Date).self) {
            due.append(DueState(name: name, enabled: enabled, nextRunAt: next, now: now))
        }
        return due
    }

    /// Advances the job's `next_run_at` past now (compare-and-set: one replica wins) and, if
    /// enabled, records the missed slots as skipped and the newest as this process's run.
    private func claimSlots(of job: JobDefinition, state: DueState) async throws -> UUID? {
        guard let newNext = job.schedule.nextSlot(after: state.now) else { return nil }
        let slots: [Date]
        if let nextRunAt = state.nextRunAt {
            // After a long downtime only the newest slots are recorded: start the walk no
            // earlier than that many intervals back.
            let window = job.schedule.typicalInterval(around: state.now).seconds * Double(configuration.maximumSkippedSlots + 1)
            let walkFrom = max(nextRunAt, state.now.addingTimeInterval(-window))
            let newer = job.schedule.slots(after: walkFrom, through: state.now, limit: configuration.maximumSkippedSlots + 1)
            slots = walkFrom == nextRunAt ? Array(([nextRunAt] + newer).suffix(configuration.maximumSkippedSlots + 1)) : newer
        } else {
            slots = []  // first sight of the job: schedule it, run nothing yet
        }
        let workerID = runner.workerID
        let maximumSkipped = configuration.maximumSkippedSlots
        return try await runner.client.withTransaction(logger: logger) { connection -> UUID? in
            let advanced = try await connection.query(
                """
                UPDATE job_definitions SET next_run_at = \(newNext)
                 WHERE name = \(job.name) AND next_run_at IS NOT DISTINCT FROM \(state.nextRunAt)
                RETURNING enabled
                """,
                logger: logger
            ).collect()
            guard let row = advanced.first, try row.decode(Bool.self), let slot = slots.last else { return nil }
            let missed = Array(slots.dropLast().suffix(max(0, maximumSkipped)))
            if !missed.isEmpty {
                try await connection.query(
                    """
                    INSERT INTO job_executions (job_name, scheduled_for, status, finished_at, error, triggered_by, worker_id)
                    SELECT \(job.name), slot, 'skipped', now(), 'missed while no scheduler ran; caught up by the run for ' || \(slot)::timestamptz,
                           'scheduler', \(workerID)
                      FROM unnest(\(missed)::timestamptz[]) AS slot
                    ON CONFLICT (job_name, scheduled_for) WHERE triggered_by = 'scheduler' DO NOTHING
                    """,
                    logger: logger
                )
                logger.warning(
                    "job slots missed while no scheduler ran; catching up with one run",
                    metadata: ["job.name": .string(job.name), "job.skipped": .stringConvertible(missed.count)]
                )
            }
            return try await connection.query(
                """
                INSERT INTO job_executions (job_name, scheduled_for, status, triggered_by, worker_id)
                VALUES (\(job.name), \(slot), 'pending', 'scheduler', \(workerID))
                ON CONFLICT (job_name, scheduled_for) WHERE triggered_by = 'scheduler' DO NOTHING
                RETURNING id
                """,
                logger: logger
            ).collect().first?.decode(UUID.self)
        }
    }

    /// Rows inserted with psql (`INSERT INTO job_executions (job_name) VALUES (…)`) wait as
    /// `pending` with no worker; a scheduler takes a few per tick, each once no run of its
    /// job is going (a request is run after the current run, never skipped because of it).
    private func claimRequestedRuns() async throws -> [(JobDefinition, UUID)] {
        let names = catalog.jobs.map(\.name)
        var claimed: [(JobDefinition, UUID)] = []
        let rows = try await runner.client.query(
            """
            UPDATE job_executions SET worker_id = \(runner.workerID)
             WHERE id IN (SELECT q.id FROM job_executions q
                           WHERE q.status = 'pending' AND q.worker_id IS NULL AND q.job_name = ANY(\(names))
                             AND NOT EXISTS (SELECT 1 FROM job_executions r
                                              WHERE r.job_name = q.job_name AND r.status = 'running')
                           ORDER BY q.created_at
                           FOR UPDATE SKIP LOCKED
                           LIMIT 10)
            RETURNING id, job_name
            """,
            logger: logger
        )
        for try await (id, name) in rows.decode((UUID, String).self) {
            if let job = catalog[name] { claimed.append((job, id)) }
        }
        // A request that nobody takes stays visible for a while, then fails with a reason:
        // while this scheduler is running (its own row beating, started before the wait
        // began), any running scheduler that knows the job would have taken it within a
        // tick. Requests for this catalog's jobs are never failed here: they are taken above.
        let timeout = configuration.requestTimeout.seconds
        let failed = try await runner.client.query(
            """
            UPDATE job_executions e
               SET status = 'failed', finished_at = now(),
                   error = CASE WHEN EXISTS (SELECT 1 FROM job_definitions d WHERE d.name = e.job_name)
                                THEN 'no running scheduler knows job ' || e.job_name || ': nobody took the request in '
                                     || \(Int64(timeout.rounded(.up))) || ' s (is a fila version that has it running?)'
                                ELSE 'no job named ' || e.job_name || ' (see job_definitions)' END
              FROM worker_heartbeats me
             WHERE me.id = \(runner.workerID) AND fila_process_alive(me)
               AND e.status = 'pending' AND e.worker_id IS NULL AND NOT (e.job_name = ANY(\(names)))
               AND greatest(e.created_at, me.started_at) < now() - make_interval(secs => \(timeout))
            RETURNING e.job_name
            """,
            logger: logger
        ).collect()
        for row in failed {
            let name = try row.decode(String.self)
            logger.warning("job request failed: no running scheduler took it", metadata: ["job.name": .string(name)])
        }
        return claimed
    }

    /// Rows this process claimed (`pending`, `worker_id` = ours) that no run of this
    /// scheduler holds any more: their run failed before it could start (the lock
    /// connection would not open, the start could not be written, the database was
    /// unreachable). Marked failed, with the run's reason when it is known.
    private func failClaimedRunsThatNeverStarted() async throws {
        let (inHand, failures) = claims.snapshot()
        let failed = try await runner.client.query(
            """
            WITH reasons AS (SELECT * FROM unnest(\(failures.map(\.key))::uuid[], \(failures.map(\.value))::text[]) AS r(id, reason))
            UPDATE job_executions e
               SET status = 'failed', finished_at = now(),
                   error = 'the run never started: '
                           || coalesce((SELECT reason FROM reasons r WHERE r.id = e.id), 'it ended before its start was recorded')
             WHERE e.status = 'pending' AND e.worker_id = \(runner.workerID) AND NOT (e.id = ANY(\(inHand)::uuid[]))
            RETURNING e.job_name
            """,
            logger: logger
        ).collect()
        claims.forget(Array(failures.keys))
        for row in failed {
            let name = try row.decode(String.self)
            logger.warning("job run marked failed: it never started", metadata: ["job.name": .string(name)])
        }
    }

    /// Runs (and claimed, unstarted runs) of processes whose heartbeat went stale: their
    /// process died, and their advisory lock died with its connection.
    private func failRunsOfLostProcesses() async throws {
        let failed = try await runner.client.query(
            """
            WITH lost AS (
                UPDATE job_executions e
                   SET status = 'failed', finished_at = now(),
                       duration_ms = CASE WHEN e.started_at IS NULL THEN NULL
                                          ELSE greatest(0, (extract(epoch FROM now() - e.started_at) * 1000)::bigint) END,
                       error = 'the process running it (' || e.worker_id || ') stopped heart-beating'
                 WHERE e.status IN ('pending', 'running') AND e.worker_id IS NOT NULL
                   -- Only a process that is itself heart-beating judges others: after a database
                   -- outage every heartbeat is stale at once, and nobody is dead for that.
                   AND EXISTS (SELECT 1 FROM worker_heartbeats me WHERE me.id = \(runner.workerID) AND fila_process_alive(me))
                   AND NOT EXISTS (SELECT 1 FROM worker_heartbeats h WHERE h.id = e.worker_id AND fila_process_alive(h))
                RETURNING e.job_name)
            SELECT job_name FROM lost
            """,
            logger: logger
        ).collect()
        for row in failed {
            let name = try row.decode(String.self)
            logger.warning("job run marked failed: its process stopped heart-beating", metadata: ["job.name": .string(name)])
        }
    }
}

/// The executions a scheduler has claimed and not finished with, so that a tick tells its
/// process's `pending` rows that are about to run from those whose run never started.
/// Claims are recorded in the tick that commits them, before the next tick looks.
final class ClaimedRuns: Sendable {
    private struct State {
        var inHand: Set<UUID> = []
        /// Runs that ended by throwing, with the reason, until a tick has written it.
        var failures: [UUID: String] = [:]
    }

    private let state = Mutex(State())

    func claimed(_ id: UUID) {
        state.withLock { _ = $0.inHand.insert(id) }
    }

    func ended(_ id: UUID, failure: String? = nil) {
        state.withLock { state in
            state.inHand.remove(id)
            if let failure { state.failures[id] = failure }
        }
    }

    func snapshot() -> (inHand: [UUID], failures: [UUID: String]) {
        state.withLock { (Array($0.inHand), $0.failures) }
    }

    func forget(_ ids: [UUID]) {
        state.withLock { state in
            for id in ids { state.failures[id] = nil }
        }
    }
}
