import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Primitives
import Queue
import ServiceLifecycle
import Synchronization
import Testing

/// A worker with its heartbeat and listener, running in a ServiceGroup as `fila worker`
/// runs it, on the test's database.
struct RunningWorker {
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let identity: ProcessIdentity

    static func start(
        url: DatabaseURL,
        client: PostgresClient,
        sender: any MessageSender,
        configuration: Worker.Configuration
    ) -> RunningWorker {
        let identity = ProcessIdentity(kind: .worker, version: "test")
        let heartbeat = HeartbeatService(client: client, identity: identity, stats: ProcessStats(), logger: logger)
        let wake = WakeSignal()
        let worker = Worker(configuration: configuration, queue: MessageQueue(client: client), sender: sender, heartbeat: heartbeat, wake: wake, logger: logger)
        let group = ServiceGroup(
            services: [heartbeat, QueueListener(url: url, wake: wake, logger: logger), worker],
            logger: logger
        )
        return RunningWorker(group: group, task: Task { try await group.run() }, identity: identity)
    }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }
}

/// Sends nothing: counts the sends that began, waits `delay`, and reports success.
/// Counts the sends it begins and the ones it reports sent; after `delay`, each succeeds,
/// or fails as retryable when `failing`.
final class CountingSender: MessageSender {
    let name = "counting"
    let delay: Duration
    let failing: Bool
    private let begun = Mutex(0)
    private let succeeded = Mutex(0)

    init(delay: Duration = .zero, failing: Bool = false) {
        self.delay = delay
        self.failing = failing
    }

    var started: Int { begun.withLock { $0 } }
    var sent: Int { succeeded.withLock { $0 } }

    func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult {
        begun.withLock { $0 += 1 }
        if delay > .zero { try? await Task.sleep(for: delay) }
        if failing {
            return .retryableFailure(outcome: .failedProvider, reasonCode: "counting:failure", error: "counting: failure")
        }
        succeeded.withLock { $0 += 1 }
        return .sent(provider: name, providerMessageID: nil, chipID: nil)
    }
}

/// Polls `condition` every 50 ms for up to `seconds`; returns whether it became true. The
/// default is generous: the suite's start on two cores can slow every round trip tenfold.
/// Whether the claim loop turned `count` times (its age fell back) within `limit`. A stopped
/// loop's age only grows, so this fails for it however long it is given; a turning loop
/// passes however loaded the machine: no bound on how fast it turns.
func claimLoopTurns(_ stats: ProcessStats, _ count: Int, within limit: Duration) async throws -> Bool {
    var turns = 0
    var last = try #require(stats.claimLoopAge)
    let end = ContinuousClock.now + limit
    while ContinuousClock.now < end {
        try await Task.sleep(for: .milliseconds(50))
        let age = try #require(stats.claimLoopAge)
        if age < last { turns += 1 }
        if turns >= count { return true }
        last = age
    }
    return false
}

func eventually(within seconds: Double = 60, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

@Suite("The worker loop", .migratedDatabase, .timeLimit(.minutes(3)))
struct WorkerTests {
    @Test func drainsTheQueueAndStopsClean() async throws {
        let url = try TestDatabase.current.url
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<500).map { message($0) }, logger: logger)
        let sender = CountingSender()
        let worker = RunningWorker.start(url: url, client: queue.client, sender: sender, configuration: .init(concurrency: 20, batchSize: 50))
        #expect(try await eventually { try await queue.count(where: "status = 'enviada'") == 500 })
        try await worker.stop()
        #expect(sender.sent == 500)
        let heartbeat = try await queue.client.query(
            "SELECT status, processed_total, in_flight FROM worker_heartbeats WHERE id = \(worker.identity.id)",
            logger: logger
        ).collect().first!.decode((String, Int64, Int32).self)
        #expect(heartbeat.0 == "stopped")
        #expect(heartbeat.1 == 500)
        #expect(heartbeat.2 == 0)
    }

    /// An idle worker with a one-minute poll interval starts a new message on NOTIFY.
    @Test func anIdleWorkerWakesOnNotify() async throws {
        let url = try TestDatabase.current.url
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let sender = CountingSender()
        let worker = RunningWorker.start(url: url, client: queue.client, sender: sender, configuration: .init(pollInterval: .seconds(60)))
        // Wait until the worker listens and has found the queue empty.
        let listening = try await eventually {
            try await queue.client.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                logger: logger
            ).collect().first!.decode(Int.self) == 1
        }
        #expect(listening)
        try await Task.sleep(for: .milliseconds(300))

        let id = try await queue.enqueue(message(1), logger: logger).id
        // Far sooner than the 60 s poll: only the notification can have woken it.
        #expect(try await eventually(within: 30) { try await queue.row(id).status == "enviada" })
        try await worker.stop()
    }

    @Test func shutdownWaitsForInFlightSends() async throws {
        let url = try TestDatabase.current.url
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<10).map { message($0) }, logger: logger)
        // Stop only once every send has really begun: those are in flight, and a
        // graceful stop lets them finish.
        let sender = CountingSender(delay: .milliseconds(700))
        let worker = RunningWorker.start(url: url, client: queue.client, sender: sender, configuration: .init(concurrency: 10, batchSize: 10))
        #expect(try await eventually { sender.started == 10 })
        try await worker.stop()
        #expect(try await queue.count(where: "status = 'enviada'") == 10)
    }

    /// Sends cut off by the drain deadline go back to pendente without an attempt burned.
    @Test func theDrainDeadlineHandsBackWhatIsStillInFlight() async throws {
        let url = try TestDatabase.current.url
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<5).map { message($0) }, logger: logger)
        let sender = CountingSender(delay: .seconds(60))
        let worker = RunningWorker.start(
            url: url, client: queue.client, sender: sender,
            configuration: .init(concurrency: 5, batchSize: 5, pollInterval: .milliseconds(100), drainTimeout: .milliseconds(300))
        )
        #expect(try await eventually { sender.started == 5 })
        try await worker.stop()
        #expect(try await queue.count(where: "status = 'pendente' AND tentativas = 0 AND outcome = 'FAILED_WORKER_LOST' AND outcome_reason_code = 'shutdown:drain_deadline' AND worker_id IS NULL") == 5)
    }

    @Test func retryableFailuresAreRescheduledWithBackoff() async throws {
        let url = try TestDatabase.current.url
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<20).map { message($0) }, logger: logger)
        let sender = CountingSender(failing: true)
        let worker = RunningWorker.start(
            url: url, client: queue.client, sender: sender,
            configuration: .init(retryBackoff: Backoff(base: .seconds(300), multiplier: 2, maximum: .seconds(900), jitter: .none))
        )
        #expect(try await eventually { try await queue.count(where: "tentativas = 1") == 20 })
        try await worker.stop()
        #expect(try await queue.count(where: "status = 'pendente' AND outcome = 'FAILED_PROVIDER' AND agendar_para > outcome_at + interval '290 seconds'") == 20)
    }

    /// The claim loop turns at least once per poll interval when idle and when every slot is
    /// taken, and the heartbeat carries its age into `claim_loop_at`: the row stays fresh and
    /// the worker alive.
    @Test func theClaimLoopKeepsTurningIdleAndFullAndTheHeartbeatSaysSo() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        let identity = ProcessIdentity(kind: .worker, version: "test")
        let stats = ProcessStats()
        // Each beat's deadline is its interval: a second, so a loaded machine does not time
        // the beats out and leave the row stale.
        let heartbeat = HeartbeatService(client: client, identity: identity, stats: stats, interval: .seconds(1), logger: logger)
        // One slot, held by a send that outlasts the test's observations.
        let sender = CountingSender(delay: .seconds(30))
        let worker = Worker(
            configuration: .init(concurrency: 1, batchSize: 1, pollInterval: .milliseconds(200), drainTimeout: .milliseconds(100)),
            queue: queue, sender: sender, heartbeat: heartbeat, wake: WakeSignal(), logger: logger
        )
        let group = ServiceGroup(services: [heartbeat, worker], logger: logger)
        let task = Task { try await group.run() }

        /// `claim_loop_at` of the row while the row counts as alive.
        func loopInstantInDatabase() async throws -> Date? {
            try await client.query(
                "SELECT claim_loop_at FROM worker_heartbeats WHERE id = \(identity.id) AND fila_process_alive(worker_heartbeats)",
                logger: logger
            ).collect().first?.decode(Date?.self)
        }
        /// Whether the row's `claim_loop_at` moves forward while the row stays alive.
        func rowFollowsTheLoop() async throws -> Bool {
            let first = try #require(try await loopInstantInDatabase())
            return try await eventually { try await loopInstantInDatabase().map { $0 > first } ?? false }
        }

        // Idle: nothing to claim; polled every 200 ms.
        #expect(try await eventually { try await loopInstantInDatabase() != nil })
        #expect(try await claimLoopTurns(stats, 5, within: .seconds(60)))
        #expect(try await rowFollowsTheLoop())

        // Full: the one slot is busy and a second message waits for room; the loop still turns.
        _ = try await queue.enqueue([message(1), message(2)], logger: logger)
        #expect(try await eventually { sender.started == 1 && stats.inFlight == 1 })
        #expect(try await claimLoopTurns(stats, 5, within: .seconds(60)))
        #expect(try await rowFollowsTheLoop())

        await group.triggerGracefulShutdown()
        try await task.value
    }

    /// A long poll interval does not make an idle loop look stuck: it still turns at least
    /// every five seconds, without claiming.
    @Test func aLongPollIntervalStillTurnsTheLoopEveryFewSeconds() async throws {
        let client = try TestDatabase.current.client
        let stats = ProcessStats()
        let heartbeat = HeartbeatService(client: client, identity: ProcessIdentity(kind: .worker, version: "test"), stats: stats, logger: logger)
        let worker = Worker(
            configuration: .init(pollInterval: .seconds(120)),
            queue: MessageQueue(client: client), sender: CountingSender(), heartbeat: heartbeat, wake: WakeSignal(), logger: logger
        )
        let group = ServiceGroup(services: [worker], logger: logger)
        let task = Task { try await group.run() }
        // A loop turning only on the 120 s poll would not turn again in 30 s; one turning
        // every 5 s does, several times, however loaded the machine.
        #expect(try await eventually { stats.claimLoopAge != nil })
        #expect(try await claimLoopTurns(stats, 2, within: .seconds(30)))
        await group.triggerGracefulShutdown()
        try await task.value
    }
}
