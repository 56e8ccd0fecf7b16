import Database
import Logging
import Primitives
import Synchronization

/// The worker's producer: decides when to claim and how many, claims, and hands each
/// claimed message on to be sent.
///
/// - It claims only into free slots (`concurrency` minus the claims the outcome writer still
///   holds), in batches of up to `batchSize`, and waits for a useful batch rather than
///   claiming row by row under load. So a busy worker never holds rows it cannot start,
///   and a writer that falls behind stops the claiming.
/// - It sleeps when the queue is empty and wakes on the `WakeSignal` (NOTIFY through
///   `QueueListener`, a freed slot, shutdown) or on the poll interval, whichever comes first.
/// - While the sender is paused (every circuit open) it claims nothing, since every row would
///   only be deferred, and looks again when the sender may be back: one timer at a time,
///   however many other wake-ups come meanwhile.
/// - Every turn is recorded in `stats` (`claimLoopTurn`), and the heartbeat reports it: a
///   worker whose loop stops turning stops counting as alive, however well its timer beats.
/// - A claim waits at most `databaseDeadline`. One that commits later is handed back at
///   once through the outcome writer (`claim_late:<worker>`), and after a failed claim the
///   rows the database says this worker holds but it never received are released before
///   the next one. Database errors are logged once per outage and retried with backoff;
///   the loop never ends on them.
final class ClaimLoop: Sendable {
    let configuration: Worker.Configuration
    let queue: MessageQueue
    let workerID: String
    /// The sender's readiness, asked before every claim. The claim loop never sends.
    let readiness: @Sendable () -> SenderReadiness
    let stats: ProcessStats
    let wake: WakeSignal
    /// Holds what is claimed and hands back what must not be sent.
    let outcomes: OutcomeWriter
    let logger: Logger
    private let stopping = Atomic<Bool>(false)

    init(
        configuration: Worker.Configuration,
        queue: MessageQueue,
        workerID: String,
        readiness: @escaping @Sendable () -> SenderReadiness,
        stats: ProcessStats,
        wake: WakeSignal,
        outcomes: OutcomeWriter,
        logger: Logger
    ) {
        self.configuration = configuration
        self.queue = queue
        self.workerID = workerID
        self.readiness = readiness
        self.stats = stats
        self.wake = wake
        self.outcomes = outcomes
        self.logger = logger
        stats.markClaimLoopTurn()
    }

    /// Whether `stop()` was called: nothing more is claimed, and a message claimed but not
    /// started yet should go back unsent.
    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// Ends `run()` at its next wake-up, which this triggers.
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
    }

    /// Claims until stopped, holding each claimed message in the outcome writer and passing
    /// it to `start`, which starts its send and returns at once.
    func run(start: (ClaimedMessage) -> Void) async {
        await withDiscardingTaskGroup { timers in
            timers.addTask { await self.pollForWork() }
            await claim(timers: &timers, start: start)
            // Ends the poll ticks and a pending pause re-check.
            timers.cancelAll()
        }
    }

    private func claim(timers: inout DiscardingTaskGroup, start: (ClaimedMessage) -> Void) async {
        var waiter = wake.makeWaiter()
        var mayHaveWork = true
        var failures = 0
        // Claiming one row at a time under load wastes round trips: wait for a useful batch.
        let threshold = max(1, min(configuration.batchSize, configuration.concurrency) / 4)

        var pausedSince: ContinuousClock.Instant?
        // When the pending re-check of a paused sender fires (nil: none armed yet).
        var recheckDue: ContinuousClock.Instant?

        while !isStopping {
            // Every path through the loop ends in a wait of at most a poll interval or 5 s (the
            // poll tick wakes an idle, a full or a paused loop alike), a claim bounded by
            // databaseDeadline, or a backoff of at most 5 s: a turn older than the heartbeat
            // timeout means the loop is stuck.
            stats.markClaimLoopTurn()
            if wake.takeWork() { mayHaveWork = true }
            let room = configuration.concurrency - stats.inFlight
            var senderLimit: Int?
            switch readiness() {
            case .paused(let retryAfter, let reason):
                // Claiming now would only defer every row: leave them for a worker (or a
                // moment) that can send, and look again when the sender may be back.
                stats.setPaused(reason)
                if pausedSince == nil {
                    pausedSince = .now
                    logger.warning("not claiming: the sender cannot send now", metadata: ["worker.pause_reason": .string(reason)])
                }
                // One timer at a time, however many other wake-ups come meanwhile: a new one
                // only once the last has fired.
                let now = ContinuousClock.now
                if recheckDue.map({ now >= $0 }) ?? true {
                    let recheck = min(max(retryAfter, .milliseconds(50)), configuration.pollInterval)
                    recheckDue = now + recheck
                    timers.addTask { [wake] in
                        try? await Task.sleep(for: recheck)
                        wake.signal()
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
                        let known = outcomes.heldClaims
                        _ = try await withDeadline(configuration.databaseDeadline, what: "releasing unconfirmed claims") { [queue, workerID, logger] in
                            try await queue.releaseUnconfirmedClaims(workerID: workerID, known: known, logger: logger)
                        }
                    }
                    let claimed = try await withDeadline(
                        configuration.databaseDeadline,
                        what: "claiming",
                        // Committed after the loop stopped waiting (a claim stuck behind a
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
                    // Held from here until the outcome is written: the slots are taken now.
                    outcomes.hold(claimed)
                    for message in claimed {
                        start(message)
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

    /// The longest the loop stays still, however long the poll interval: the heartbeat
    /// reports its last turn, and a quiet loop must not look stuck to the liveness rule.
    static let maximumQuietTurn: Duration = .seconds(5)

    /// Signals work every poll interval until cancelled, and wakes the loop in between at
    /// least every `maximumQuietTurn` without signalling work, so it turns without claiming.
    private func pollForWork() async {
        let tick = min(configuration.pollInterval, Self.maximumQuietTurn)
        var sincePoll: Duration = .zero
        while true {
            do {
                try await Task.sleep(for: tick)
            } catch {
                return
            }
            sincePoll += tick
            if sincePoll >= configuration.pollInterval {
                sincePoll = .zero
                wake.signalWork()
            } else {
                wake.signal()
            }
        }
    }

    /// A claim that committed after its deadline: its rows go back unsent.
    private func handBack(lateClaim claimed: [ClaimedMessage]) async {
        guard !claimed.isEmpty else { return }
        logger.warning(
            "a claim committed after its deadline; handing its rows back",
            metadata: ["fila.claimed": .stringConvertible(claimed.count)]
        )
        await outcomes.handBack(claimed, reasonCode: "claim_late:\(workerID)")
    }
}
