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

/// The worker loop: claims messages, hands each to a `MessageSender`, writes outcomes.
///
/// - At most `concurrency` messages are held: a message counts from its claim until its
///   outcome is written (not merely until its send returns). It claims only when there is
///   room, in batches of up to `batchSize`, so a busy worker never holds rows it cannot
///   start, and an outcome writer that falls behind (a slow or unreachable database) stops
///   the claiming. A worker killed at any moment has therefore sent at most `concurrency`
///   messages whose outcomes it did not write: the most a rescue can send twice.
/// - Outcomes go to the database in batches: a write starts as soon as an outcome is ready
///   and no other write is under way; while one is, finished attempts accumulate for the
///   next (never more than `concurrency`), so the write rate adapts to the send rate.
/// - It sleeps when the queue is empty and wakes on NOTIFY (`QueueListener`) or on the poll
///   interval, whichever comes first.
/// - Database errors (Postgres restarting) are logged once per outage and retried with
///   backoff; the worker never exits on them.
/// - Graceful shutdown: stop claiming, let in-flight sends finish until `drainTimeout`,
///   hand back whatever did not finish without burning an attempt, write every outcome,
///   then mark the heartbeat `stopped`.
///
/// ```swift
/// let worker = Worker(queue: queue, sender: sender, heartbeat: heartbeat, wake: wake, logger: logger)
/// // run it in a ServiceGroup after the PostgresClient, the HeartbeatService and the QueueListener
/// ```
public final class Worker: Service {
    public struct Configuration: Sendable {
        /// The most messages in flight at once.
        public var concurrency: Int
        /// The most messages claimed by one statement.
        public var batchSize: Int
        /// How often to look for due rows when no notification came (scheduled rows,
        /// retries, lost notifications).
        public var pollInterval: Duration
        /// How long in-flight sends may run after shutdown begins.
        public var drainTimeout: Duration
        /// The retry schedule for retryable failures.
        public var retryBackoff: Backoff
        /// How long a claim or an outcome write may go unanswered before the worker gives
        /// up on it and retries (a wedged connection must not stall the worker).
        public var databaseDeadline: Duration

        public init(
            concurrency: Int = 50,
            batchSize: Int = 100,
            pollInterval: Duration = .seconds(1),
            drainTimeout: Duration = .seconds(20),
            retryBackoff: Backoff = .messageRetry,
            databaseDeadline: Duration = .seconds(15)
        ) {
            self.concurrency = max(1, concurrency)
            self.batchSize = max(1, batchSize)
            self.pollInterval = pollInterval
            self.drainTimeout = drainTimeout
            self.retryBackoff = retryBackoff
            self.databaseDeadline = databaseDeadline
        }
    }

    public let configuration: Configuration
    let queue: MessageQueue
    let sender: any MessageSender
    let heartbeat: HeartbeatService
    let wake: WakeSignal
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    /// Whether a timer to look at the sender again is pending (while paused).
    private let recheckArmed = Atomic<Bool>(false)
    private let results = ResultBuffer()
    /// Claims this worker received and has not finished writing: anything else the database
    /// says it holds is a claim whose answer was lost.
    private let held = HeldRows()

    public init(
        configuration: Configuration = .init(),
        queue: MessageQueue,
        sender: any MessageSender,
        heartbeat: HeartbeatService,
        wake: WakeSignal,
        logger: Logger
    ) {
        self.configuration = configuration
        self.queue = queue
        self.sender = sender
        self.heartbeat = heartbeat
        self.wake = wake
        self.logger = logger
    }

    var stats: ProcessStats { heartbeat.stats }
    var workerID: String { heartbeat.identity.id }

    public func run() async throws {
        stats.set(.running)
        // A row claimed by a worker with no heartbeat row would look abandoned: register first.
        guard await registerHeartbeat() else { return }
        logger.info(
            "worker started",
            metadata: [
                "worker.id": .string(workerID), "worker.sender": .string(sender.name),
                "worker.concurrency": .stringConvertible(configuration.concurrency),
                "worker.batch": .stringConvertible(configuration.batchSize),
            ]
        )

        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { background in
                background.addTask { await self.writeOutcomes() }
                await withDiscardingTaskGroup { timers in
                    timers.addTask { await self.pollForWork() }
                    await withDiscardingTaskGroup { sends in
                        await self.claimLoop(sends: &sends)
                        await self.drain(sends: &sends)
                    }
                    timers.cancelAll()
                }
                // Every send has returned: write what is left, then let the writer end.
                results.close()
                wake.finish()
            }
            await releaseUnknownClaims()
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .releasing)
            self.stats.set(.draining)
            self.wake.signal()
        }
        stats.set(.stopped)
        // Bounded: with Postgres away at shutdown, the heartbeat service's own last write (or
        // the staleness of this row) says it stopped.
        try? await withDeadline(.seconds(2), what: "the last heartbeat") { [heartbeat] in try await heartbeat.beat(status: .stopped) }
        logger.info("worker stopped", metadata: ["worker.processed": .stringConvertible(stats.processed)])
    }

    private var isStopping: Bool { stopping.load(ordering: .acquiring) }

    private func registerHeartbeat() async -> Bool {
        var attempt = 0
        while !isStopping && !Task.isCancelled {
            do {
                try await heartbeat.beat(status: .running)
                return true
            } catch {
                attempt += 1
                if attempt == 1 {
                    logger.error("cannot register the worker's heartbeat; retrying", metadata: ["error": .string(String(reflecting: error))])
                }
                try? await Task.sleep(for: Backoff(base: .milliseconds(200), multiplier: 2, maximum: .seconds(5), jitter: .full).delay(forAttempt: attempt))
            }
        }
        return false
    }

    // MARK: - Claiming

    private func claimLoop(sends: inout DiscardingTaskGroup) async {
        var waiter = wake.makeWaiter()
        var mayHaveWork = true
        var failures = 0
        // Claiming one row at a time under load wastes round trips: wait for a useful batch.
        let threshold = max(1, min(configuration.batchSize, configuration.concurrency) / 4)

        var pausedSince: ContinuousClock.Instant?

        while !isStopping {
            if wake.takeWork() { mayHaveWork = true }
            let room = configuration.concurrency - stats.inFlight
            var senderLimit: Int?
            switch sender.readiness() {
            case .paused(let retryAfter, let reason):
                // Claiming now would only defer every row: leave them for a worker (or a
                // moment) that can send, and look again when the sender may be back.
                stats.setPaused(reason)
                if pausedSince == nil {
                    pausedSince = .now
                    logger.warning("not claiming: the sender cannot send now", metadata: ["worker.pause_reason": .string(reason)])
                }
                // One timer at a time, however many other wake-ups come meanwhile.
                if !recheckArmed.exchange(true, ordering: .acquiringAndReleasing) {
                    let recheck = min(max(retryAfter, .milliseconds(50)), configuration.pollInterval)
                    sends.addTask {
                        try? await Task.sleep(for: recheck)
                        self.recheckArmed.store(false, ordering: .releasing)
                        self.wake.signal()
                    }
                }
                guard await waiter.next() != nil else { return }
                continue
            case .ready(let limit):
                if let since = pausedSince {
                    pausedSince = nil
                    stats.setPaused(nil)
                    mayHaveWork = true
                    logger.notice("claiming again: the sender can send", metadata: ["worker.paused_seconds": .stringConvertible(Int((ContinuousClock.now - since).seconds))])
                }
                // Only probes are admitted: the messages already in flight hold some of them
                // (a claimed message takes its probe only when its send begins).
                senderLimit = limit.map { max(0, $0 - stats.inFlight) }
            }
            if mayHaveWork && room >= min(threshold, senderLimit ?? threshold) && (senderLimit ?? 1) > 0 {
                let limit = min(room, configuration.batchSize, senderLimit ?? Int.max)
                do {
                    if failures > 0 {
                        // The failed claim may have committed with its answer lost: those rows
                        // would sit under this live worker until the 60-minute stuck reset.
                        let known = held.snapshot()
                        try await withDeadline(configuration.databaseDeadline, what: "releasing unconfirmed claims") { [queue, workerID, logger] in
                            try await queue.releaseUnconfirmedClaims(workerID: workerID, known: known, logger: logger)
                        }
                    }
                    let claimed = try await withDeadline(
                        configuration.databaseDeadline,
                        what: "claiming",
                        // Committed after the worker stopped waiting (a claim stuck behind a
                        // lock): nobody will send these rows, so hand them back at once.
                        whenAbandoned: { late in await self.handBack(lateClaim: late) }
                    ) { [queue, workerID, logger] in
                        try await queue.claim(workerID: workerID, limit: limit, logger: logger)
                    }
                    if failures > 0 {
                        logger.info("claiming again after a database error")
                        failures = 0
                    }
                    mayHaveWork = claimed.count == limit
                    hold(claimed)
                    for message in claimed {
                        sends.addTask { await self.process(message) }
                    }
                    if mayHaveWork { continue }
                } catch {
                    failures += 1
                    if failures == 1 {
                        logger.error("claiming failed; retrying with backoff", metadata: ["error": .string(String(reflecting: error))])
                    }
                    let delay = Backoff(base: .milliseconds(100), multiplier: 2, maximum: .seconds(5), jitter: .full).delay(forAttempt: failures)
                    try? await Task.sleep(for: delay)
                    continue
                }
            }
            // Nothing to claim, or no room: wait for a notification, the poll tick, a freed
            // slot or shutdown.
            guard await waiter.next() != nil else { return }
        }
    }

    private func drain(sends: inout DiscardingTaskGroup) async {
        guard stats.inFlight > 0 else {
            // Only a pause's recheck timer may be left: end it now.
            sends.cancelAll()
            return
        }
        logger.info("draining in-flight sends", metadata: ["worker.in_flight": .stringConvertible(stats.inFlight)])
        let deadline = ContinuousClock.now + configuration.drainTimeout
        let timeout = configuration.drainTimeout
        sends.addTask { [wake] in
            try? await Task.sleep(for: timeout)
            wake.signal()
        }
        var waiter = wake.makeWaiter()
        while stats.inFlight > 0 && ContinuousClock.now < deadline {
            _ = await waiter.next()
        }
        if stats.inFlight > 0 {
            logger.warning(
                "drain deadline passed; cancelling the sends still in flight and handing their messages back",
                metadata: ["worker.in_flight": .stringConvertible(stats.inFlight)]
            )
        }
        // Ends the deadline timer and cuts off any send still running.
        sends.cancelAll()
    }

    /// Signals work every poll interval until cancelled.
    private func pollForWork() async {
        while true {
            do {
                try await Task.sleep(for: configuration.pollInterval)
            } catch {
                return
            }
            wake.signalWork()
        }
    }

    // MARK: - Sending

    private func process(_ message: ClaimedMessage) async {
        var logger = self.logger
        logger[metadataKey: "fila.message_id"] = .stringConvertible(message.id)
        if let correlationID = message.correlationID { logger[metadataKey: "correlation_id"] = .string(correlationID) }

        let resolution: AttemptResolution
        if isStopping {
            // Claimed but never started: hand it back untouched.
            resolution = .deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:not_started", until: .zero)
        } else {
            let result = await sender.send(message, logger: logger)
            if Task.isCancelled {
                // Cut off by the drain deadline: whether it reached the provider is unknown,
                // so it goes back without an attempt burned (delivery is at least once).
                resolution = .deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:drain_deadline", until: .zero)
            } else {
                resolution = self.resolution(of: result, for: message)
            }
        }
        // Still held: the slot frees once the outcome is written.
        results.append(AttemptResult(messageID: message.id, claim: message.claim, resolution: resolution))
    }

    func resolution(of result: SendResult, for message: ClaimedMessage) -> AttemptResolution {
        switch result {
        case .sent(let provider, let providerMessageID, let chipID):
            return .sent(provider: provider, providerMessageID: providerMessageID, chipID: chipID)
        case .retryableFailure(let outcome, let reasonCode, let error):
            let delay = configuration.retryBackoff.delay(forAttempt: message.tentativas + 1)
            return .retry(outcome: outcome, reasonCode: reasonCode, error: error, retryAfter: delay)
        case .permanentFailure(let outcome, let reasonCode, let error):
            return .fail(outcome: outcome, reasonCode: reasonCode, error: error)
        case .deferred(let outcome, let reasonCode, let until):
            return .deferred(outcome: outcome, reasonCode: reasonCode, until: until)
        }
    }

    // MARK: - Held claims

    /// Counts claims as held (in flight) until their outcome is written.
    private func hold(_ claimed: [ClaimedMessage]) {
        stats.addInFlight(held.insert(claimed.map(\.heldClaim)))
    }

    private func release(_ claims: [HeldClaim]) {
        let freed = held.remove(claims)
        guard freed > 0 else { return }
        stats.addInFlight(-freed)
        wake.signal()
    }

    /// A claim that committed after its deadline: its rows go back through the outcome
    /// writer (fenced by their claims, retried like any outcome), never sent.
    private func handBack(lateClaim claimed: [ClaimedMessage]) async {
        guard !claimed.isEmpty else { return }
        logger.warning(
            "a claim committed after its deadline; handing its rows back",
            metadata: ["fila.claimed": .stringConvertible(claimed.count)]
        )
        hold(claimed)
        let returns = claimed.map {
            AttemptResult(messageID: $0.id, claim: $0.claim, resolution: .deferred(outcome: .failedWorkerLost, reasonCode: "claim_late:\(workerID)", until: .zero))
        }
        guard !results.append(contentsOf: returns) else { return }
        // The writer has ended (shutdown): one direct attempt; the rows are rescued otherwise.
        _ = try? await withDeadline(configuration.databaseDeadline, what: "handing back a late claim") { [queue, logger] in
            try await queue.finish(returns, logger: logger)
        }
        release(returns.map(\.heldClaim))
    }

    /// At shutdown, once every outcome it could write is written: rows the database says this
    /// worker holds and it never received (a claim whose answer was lost) go back now rather
    /// than after the rescue's timeout.
    private func releaseUnknownClaims() async {
        let known = held.snapshot()
        _ = try? await withDeadline(.seconds(2), what: "releasing unconfirmed claims") { [queue, workerID, logger] in
            try await queue.releaseUnconfirmedClaims(workerID: workerID, known: known, logger: logger)
        }
    }

    // MARK: - Writing outcomes

    private func writeOutcomes() async {
        var failures = 0
        while true {
            let batch = await results.next()
            guard !batch.isEmpty else { return }  // closed and empty
            while true {
                do {
                    let report = try await withDeadline(configuration.databaseDeadline, what: "writing outcomes") { [queue, logger] in
                        try await queue.finish(batch, logger: logger)
                    }
                    // Written or fenced, these claims are over: free their slots.
                    release(batch.map(\.heldClaim))
                    stats.addProcessed(report.written.count)
                    if failures > 0 {
                        logger.info("outcomes written again after a database error")
                        failures = 0
                    }
                    break
                } catch {
                    failures += 1
                    if Task.isCancelled {
                        // Shutdown ran out of time with the database away: these rows stay
                        // `processando` under this worker and come back through the rescue
                        // of lost workers. Nothing is lost; retrying here would only hang.
                        logger.error(
                            "shutting down with outcomes unwritten; their messages will be rescued",
                            metadata: ["worker.pending_outcomes": .stringConvertible(batch.count + results.drainCount())]
                        )
                        return
                    }
                    if failures == 1 {
                        logger.error(
                            "writing outcomes failed; keeping them and retrying",
                            metadata: ["error": .string(String(reflecting: error)), "worker.pending_outcomes": .stringConvertible(batch.count)]
                        )
                    } else if failures % 20 == 0 {
                        logger.error(
                            "writing outcomes still failing",
                            metadata: ["error": .string(String(reflecting: error)), "worker.attempts": .stringConvertible(failures)]
                        )
                    }
                    try? await Task.sleep(for: Backoff(base: .milliseconds(100), multiplier: 2, maximum: .seconds(5), jitter: .full).delay(forAttempt: failures))
                }
            }
        }
    }
}

/// The claims a worker holds and knows of, each by row and claim: the late, fenced write
/// of an earlier claim of a row must not release the row's current claim.
final class HeldRows: Sendable {
    private let claims = Mutex(Set<HeldClaim>())
    /// Adds `new` and returns how many of them were not held yet.
    @discardableResult
    func insert(_ new: [HeldClaim]) -> Int {
        claims.withLock { claims in new.reduce(0) { added, claim in added + (claims.insert(claim).inserted ? 1 : 0) } }
    }
    /// Removes `done` and returns how many of them were held.
    @discardableResult
    func remove(_ done: [HeldClaim]) -> Int {
        claims.withLock { claims in done.reduce(0) { freed, claim in freed + (claims.remove(claim) == nil ? 0 : 1) } }
    }
    func snapshot() -> Set<HeldClaim> { claims.withLock { $0 } }
}

/// Finished attempts waiting to be written. `next()` returns everything accumulated
/// since the last call, waiting while there is nothing; an empty array means closed (or
/// the waiting task was cancelled).
final class ResultBuffer: Sendable {
    private struct State {
        var items: [AttemptResult] = []
        var closed = false
    }

    private let state = Mutex(State())
    private let signal = WakeSignal()

    func append(_ result: AttemptResult) {
        state.withLock { $0.items.append(result) }
        signal.signal()
    }

    /// Appends unless closed; returns whether it did.
    func append(contentsOf results: [AttemptResult]) -> Bool {
        let appended = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.items.append(contentsOf: results)
            return true
        }
        if appended { signal.signal() }
        return appended
    }

    func close() {
        state.withLock { $0.closed = true }
        signal.signal()
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    func next() async -> [AttemptResult] {
        var waiter = signal.makeWaiter()
        while true {
            let (items, closed) = state.withLock { state -> ([AttemptResult], Bool) in
                defer { state.items.removeAll(keepingCapacity: true) }
                return (state.items, state.closed)
            }
            if !items.isEmpty || closed { return items }
            // Cancelled (shutdown out of time): stop waiting; the caller sees "closed".
            guard await waiter.next() != nil else { return [] }
        }
    }

    /// Empties the buffer and says how many results it held.
    func drainCount() -> Int {
        state.withLock { state in
            defer { state.items.removeAll() }
            return state.items.count
        }
    }
}
