#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Primitives
import Synchronization

/// The worker's completer: writes the outcomes of its attempts to the database in batches,
/// and counts the claims the worker holds until then.
///
/// - A claim is held from `hold(_:)` until its outcome is written (or fenced), not merely
///   until its send returns, and the claim loop claims only into free slots. A worker killed
///   at any moment has therefore sent at most `concurrency` messages whose outcomes it did
///   not write: the most a rescue can send twice. A writer that falls behind (a slow or
///   unreachable database) stops the claiming instead of piling up unrecorded sends.
/// - A write starts as soon as an outcome is ready and no other write is under way; while
///   one is, finished attempts accumulate for the next (never more than the held claims),
///   so the write rate adapts to the send rate at one statement per round trip.
/// - Every write is fenced by the claims it ends (`MessageQueue.finish`): the outcome of a
///   claim that was rescued or claimed again meanwhile changes nothing, and its slot frees.
/// - A failed write is kept and retried with backoff, logged once per outage. Only a
///   cancelled `run()` (shutdown out of time) gives up: those rows stay `processando` and
///   come back through the rescue of lost workers.
/// - After `close()`, `run()` writes everything submitted, then returns: the final flush.
///
/// ```swift
/// let outcomes = OutcomeWriter(queue: queue, stats: stats, wake: wake, databaseDeadline: .seconds(15), logger: logger)
/// outcomes.hold(claimed)                       // each claim takes a slot …
/// outcomes.submit(result)                      // … its send has ended …
/// // … and `run()` frees the slot once the outcome is in the database.
/// ```
final class OutcomeWriter: Sendable {
    let queue: MessageQueue
    /// Carries the held count (`inFlight`, which the heartbeat reports) and the written
    /// count (`processed`).
    let stats: ProcessStats
    /// Signalled whenever a slot frees, so the claim loop (or a drain) looks again.
    let wake: WakeSignal
    /// How long one write may go unanswered before it counts as failed and is retried (a
    /// wedged connection must not stall the worker).
    let databaseDeadline: Duration
    /// The wait between failed writes.
    let retryBackoff: Backoff
    let logger: Logger
    /// Claims held and known, each by row and claim: the late, fenced write of an earlier
    /// claim of a row must not release the row's current claim.
    private let held = HeldRows()
    private let pending = ResultBuffer()

    init(
        queue: MessageQueue,
        stats: ProcessStats,
        wake: WakeSignal,
        databaseDeadline: Duration,
        retryBackoff: Backoff = Backoff(base: .milliseconds(100), multiplier: 2, maximum: .seconds(5), jitter: .full),
        logger: Logger
    ) {
        self.queue = queue
        self.stats = stats
        self.wake = wake
        self.databaseDeadline = databaseDeadline
        self.retryBackoff = retryBackoff
        self.logger = logger
    }

    // MARK: - Held claims

    /// How many claims are held: their outcomes are not written yet.
    var heldCount: Int { stats.inFlight }

    /// The claims held now. Anything else the database says this worker holds is a claim
    /// whose answer was lost.
    var heldClaims: Set<HeldClaim> { held.snapshot() }

    /// Counts `claimed` as held: each takes a slot until its outcome is written.
    func hold(_ claimed: [ClaimedMessage]) {
        stats.addInFlight(held.insert(claimed.map(\.heldClaim)))
    }

    /// Queues the outcome of a held claim for the next write. The claim stays held (its slot
    /// taken) until that write has answered.
    func submit(_ result: AttemptResult) {
        pending.append(result)
    }

    /// Holds `claimed` and gives the rows back untouched (no attempt burned, due at once),
    /// with `reasonCode`: rows that must not be sent, such as a claim that committed after the
    /// claim loop stopped waiting for it. They go through the writer (fenced by their claims,
    /// retried like any outcome); once the writer has ended, one direct write is tried and the
    /// rows are otherwise left to the rescue of lost workers.
    func handBack(_ claimed: [ClaimedMessage], reasonCode: String) async {
        guard !claimed.isEmpty else { return }
        hold(claimed)
        let returns = claimed.map {
            AttemptResult(messageID: $0.id, claim: $0.claim, resolution: .deferred(outcome: .failedWorkerLost, reasonCode: reasonCode, until: .zero))
        }
        guard !pending.append(contentsOf: returns) else { return }
        _ = try? await withDeadline(databaseDeadline, what: "handing back claimed rows") { [queue, logger] in
            try await queue.finish(returns, logger: logger)
        }
        release(returns.map(\.heldClaim))
    }

    private func release(_ claims: [HeldClaim]) {
        let freed = held.remove(claims)
        guard freed > 0 else { return }
        stats.addInFlight(-freed)
        wake.signal()
    }

    // MARK: - Writing

    /// No more outcomes will be submitted: `run()` writes what it has, then returns.
    func close() {
        pending.close()
    }

    /// Writes outcomes as they come until closed and empty, or until cancelled.
    func run() async {
        var failures = 0
        while true {
            let batch = await pending.next()
            guard !batch.isEmpty else { return }  // closed and empty
            while true {
                do {
                    let report = try await withDeadline(databaseDeadline, what: "writing outcomes") { [queue, logger] in
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
                            metadata: ["worker.pending_outcomes": .stringConvertible(batch.count + pending.drainCount())]
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
                    try? await Task.sleep(for: retryBackoff.delay(forAttempt: failures))
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
