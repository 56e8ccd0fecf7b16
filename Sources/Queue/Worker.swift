#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Observability
import PostgresNIO
import Primitives
import ServiceLifecycle

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
/// It is three parts, each readable alone: the `ClaimLoop` (when to claim, how many, and
/// what to do when a claim fails or comes late), the sends in this type (a bounded task
/// group of `MessageSender` calls, and the drain at shutdown), and the `OutcomeWriter` (the
/// batched, fenced writes, and the held claims that bound the duplicate window). A change
/// to the claim policy therefore cannot touch how outcomes are kept or how shutdown drains.
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
    /// Claims into free slots and hands each message to `process(_:)`.
    private let claims: ClaimLoop
    /// Writes outcomes and holds each claim's slot until its outcome is written.
    private let outcomes: OutcomeWriter

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
        let outcomes = OutcomeWriter(
            queue: queue, stats: heartbeat.stats, wake: wake, databaseDeadline: configuration.databaseDeadline, logger: logger
        )
        self.outcomes = outcomes
        self.claims = ClaimLoop(
            configuration: configuration, queue: queue, workerID: heartbeat.identity.id,
            readiness: { [sender] in sender.readiness() },
            stats: heartbeat.stats, wake: wake, outcomes: outcomes, logger: logger
        )
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
                background.addTask { await self.outcomes.run() }
                await withDiscardingTaskGroup { sends in
                    await self.claims.run { message in
                        sends.addTask { await self.process(message) }
                    }
                    await self.drain(sends: &sends)
                }
                // Every send has returned: write what is left, then let the writer end.
                outcomes.close()
                wake.finish()
            }
            await releaseUnknownClaims()
        } onGracefulShutdown: {
            self.stats.set(.draining)
            self.claims.stop()
        }
        stats.set(.stopped)
        // Bounded: with Postgres away at shutdown, the heartbeat service's own last write (or
        // the staleness of this row) says it stopped.
        try? await withDeadline(.seconds(2), what: "the last heartbeat") { [heartbeat] in try await heartbeat.beat(status: .stopped) }
        logger.info("worker stopped", metadata: ["worker.processed": .stringConvertible(stats.processed)])
    }

    private func registerHeartbeat() async -> Bool {
        var attempt = 0
        while !claims.isStopping && !Task.isCancelled && !Task.isShuttingDownGracefully {
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

    // MARK: - Sending

    /// After the claim loop stopped: waits for the held messages until `drainTimeout`
    /// (their sends to return and their outcomes to be written), then cuts off any send
    /// still running, whose message `process(_:)` then hands back.
    private func drain(sends: inout DiscardingTaskGroup) async {
        guard stats.inFlight > 0 else { return }
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

    /// Sends one held message and submits how it went; the message stays held until the
    /// outcome writer has written that.
    private func process(_ message: ClaimedMessage) async {
        var logger = self.logger
        logger[metadataKey: "fila.message_id"] = .stringConvertible(message.id)
        let correlationID = Self.correlationID(of: message)
        logger = Correlation.logger(logger, with: correlationID)

        let resolution: AttemptResolution
        if claims.isStopping {
            // Claimed but never started: hand it back untouched.
            resolution = .deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:not_started", until: .zero)
        } else {
            // Bound for the send: the provider request carries it as X-Correlation-ID.
            let result = await Correlation.withID(correlationID) { await sender.send(message, logger: logger) }
            if Task.isCancelled {
                // Cut off by the drain deadline: whether it reached the provider is unknown,
                // so it goes back without an attempt burned (delivery is at least once).
                resolution = .deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:drain_deadline", until: .zero)
            } else {
                resolution = self.resolution(of: result, for: message)
            }
        }
        // Still held: the slot frees once the outcome is written.
        outcomes.submit(AttemptResult(messageID: message.id, claim: message.claim, resolution: resolution))
    }

    /// The id a message's handling is followed by: its `correlation_id`, or, for a row with
    /// none (or one inserted with psql that is unfit for a header), its own id.
    static func correlationID(of message: ClaimedMessage) -> CorrelationID {
        message.correlationID.flatMap { CorrelationID(validating: $0) } ?? CorrelationID(message.id)
    }

    func resolution(of result: SendResult, for message: ClaimedMessage) -> AttemptResolution {
        switch result {
        case .sent(let provider, let providerMessageID, let chipID):
            return .sent(provider: provider, providerMessageID: providerMessageID, chipID: chipID)
        case .retryableFailure(let outcome, let reasonCode, let error, let route):
            let delay = configuration.retryBackoff.delay(forAttempt: message.tentativas + 1)
            return .retry(outcome: outcome, reasonCode: reasonCode, error: error, retryAfter: delay, route: route)
        case .permanentFailure(let outcome, let reasonCode, let error, let route):
            return .fail(outcome: outcome, reasonCode: reasonCode, error: error, route: route)
        case .deferred(let outcome, let reasonCode, let until):
            return .deferred(outcome: outcome, reasonCode: reasonCode, until: until)
        }
    }

    /// At shutdown, once every outcome it could write is written: rows the database says this
    /// worker holds and it never received (a claim whose answer was lost) go back now rather
    /// than after the rescue's timeout.
    private func releaseUnknownClaims() async {
        let known = outcomes.heldClaims
        _ = try? await withDeadline(.seconds(2), what: "releasing unconfirmed claims") { [queue, workerID, logger] in
            try await queue.releaseUnconfirmedClaims(workerID: workerID, known: known, logger: logger)
        }
    }
}
