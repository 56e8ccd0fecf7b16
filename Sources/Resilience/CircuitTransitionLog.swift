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

/// Every transition this process's breakers make, from the moment it happens until its row
/// is in `circuit_transitions` (seed T02.1), and the broadcast of this process's openings.
///
/// Breakers append here and never wait: the rows are written off the call path, in
/// batches, by `writeContinuously`. A failed write is logged once and retried with backoff;
/// the transitions are kept meanwhile (at most `pendingLimit`, the oldest dropped and the
/// drop logged, so a flapping breaker cannot grow memory without bound while Postgres is
/// away) and never thrown at a caller. Each transition has an id from the moment it is queued,
/// and its row is inserted once per id (`transition_id`): a write whose answer was lost (a time
/// limit that fired after the commit) is retried without writing the rows twice.
public final class CircuitTransitionLog: Sendable {
    /// The most transitions kept while Postgres is away.
    public static let pendingLimit = 10_000
    /// The channel on which openings are broadcast (`CircuitBreakerSync` listens to it).
    public static let channel = "fila_circuits"

    /// A transition and its row's id, kept through retries.
    struct Item: Sendable {
        let id: UUID
        let transition: CircuitTransition

        init(_ transition: CircuitTransition, id: UUID = UUID()) {
            self.id = id
            self.transition = transition
        }
    }

    private struct Pending {
        var items: [Item] = []
        var dropped = 0
    }

    /// The database clock (seconds since the epoch) at a monotonic instant.
    private struct ClockAnchor {
        var epoch: Double
        var instant: ContinuousClock.Instant
    }

    private let pending = Mutex(Pending())
    private let anchor = Mutex<ClockAnchor?>(nil)
    /// Signalled when a transition is appended (and when shutdown begins).
    private let appended = WakeSignal()

    public init() {}

    /// Queues a transition for writing.
    func append(_ transition: CircuitTransition) {
        pending.withLock { pending in
            pending.items.append(Item(transition))
            if pending.items.count > Self.pendingLimit {
                pending.items.removeFirst(pending.items.count - Self.pendingLimit)
                pending.dropped += 1
            }
        }
        appended.signal()
    }

    /// Transitions not yet written.
    public var pendingCount: Int { pending.withLock { $0.items.count } }

    /// Takes every queued transition (and how many were dropped since the last call).
    private func takePending() -> (items: [Item], dropped: Int) {
        pending.withLock { pending in
            defer { pending = Pending() }
            return (pending.items, pending.dropped)
        }
    }

    /// Puts back transitions whose write failed, ahead of any queued since.
    private func restore(_ items: [Item]) {
        pending.withLock { pending in
            pending.items.insert(contentsOf: items, at: 0)
            if pending.items.count > Self.pendingLimit {
                let excess = pending.items.count - Self.pendingLimit
                pending.items.removeFirst(excess)
                pending.dropped += excess
            }
        }
    }

    /// Writes transitions as they come until graceful shutdown, then what is left, once.
    func writeContinuously(processID: String, client: PostgresClient, logger: Logger) async {
        await withGracefulShutdownHandler {
            var waiter = appended.makeWaiter()
            var failures = 0
            while true {
                let shuttingDown = Task.isShuttingDownGracefully || Task.isCancelled
                let (items, dropped) = takePending()
                if dropped > 0 {
                    logger.error("circuit transitions dropped while Postgres was unreachable", metadata: ["circuit.dropped": .stringConvertible(dropped)])
                }
                if !items.isEmpty {
                    do {
                        try await withTimeLimit(.seconds(10), onTimeout: { DatabaseError(.queryFailed, "writing circuit transitions: no answer within 10 s") }) {
                            try await self.write(items: items, processID: processID, client: client, logger: logger)
                        }
                        if failures > 0 { logger.info("circuit transitions written again") }
                        failures = 0
                    } catch {
                        restore(items)
                        failures += 1
                        if failures == 1 {
                            logger.error("writing circuit transitions failed; keeping them and retrying", metadata: ["error": .string(String(reflecting: error))])
                        }
                        if shuttingDown { return }
                        let delay = Backoff(base: .milliseconds(200), multiplier: 2, maximum: .seconds(10), jitter: .full).delay(forAttempt: failures)
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                        continue
                    }
                }
                if shuttingDown { return }
                guard await waiter.next() != nil else { return }
            }
        } onGracefulShutdown: {
            self.appended.signal()
        }
    }

    /// Inserts the rows and, in the same transaction, notifies this process's openings
    /// (delivered at commit, so a receiver can already read the row).
    public func write(_ transitions: [CircuitTransition], processID: String, client: PostgresClient, logger: Logger) async throws {
        try await write(items: transitions.map { Item($0) }, processID: processID, client: client, logger: logger)
    }

    /// Inserts the rows whose id is not in the table yet, and notifies the openings among
    /// them: a retry of a write that did commit inserts and broadcasts nothing again.
    func write(items: [Item], processID: String, client: PostgresClient, logger: Logger) async throws {
        let transitions = items.map(\.transition)
        // A row's time is when the change happened, not when it could be written (after a
        // Postgres outage, say): the database's clock, read once an hour, plus how long after
        // that reading it happened by this process's monotonic clock. So one process's rows
        // are timed in the order they happened. Broadcasts carry what is left of the wait.
        let writtenAt = ContinuousClock.now
        do {
            try await client.withTransaction(logger: logger) { connection in
                let anchor = try await clockAnchor(connection, logger: logger)
                let times = transitions.map { anchor.epoch + ($0.at - anchor.instant).seconds }
                var inserted = Set<UUID>()
                let rows = try await connection.query(
                    """
                    INSERT INTO circuit_transitions
                        (transition_id, circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id, created_at)
                    SELECT id, c, f, t, r, n, nullif(o, -1), \(processID), to_timestamp(happened)
                      FROM unnest(\(items.map(\.id))::uuid[], \(transitions.map(\.circuit))::text[], \(transitions.map(\.from.rawValue))::text[],
                                  \(transitions.map(\.to.rawValue))::text[], \(transitions.map(\.reason))::text[],
                                  \(transitions.map { Int32(clamping: $0.consecutiveFailures) })::int4[],
                                  \(transitions.map { $0.openFor.map(Self.wholeSeconds) ?? -1 })::int4[],
                                  \(times)::float8[])
                           WITH ORDINALITY AS x(id, c, f, t, r, n, o, happened, position)
                     ORDER BY position
                    ON CONFLICT (transition_id) DO NOTHING
                    RETURNING transition_id
                    """,
                    logger: logger
                )
                for try await id in rows.decode(UUID.self) { inserted.insert(id) }
                let broadcasts = items.filter { inserted.contains($0.id) && $0.transition.isLocal && $0.transition.to == .open }.map(\.transition)
                guard !broadcasts.isEmpty else { return }
                try await connection.query(
                    """
                    SELECT pg_notify(\(Self.channel), json_build_object(
                               'kind', 'open', 'circuit', c, 'origin', \(processID), 'open_seconds', o, 'reason', r)::text)
                      FROM unnest(\(broadcasts.map(\.circuit))::text[],
                                  \(broadcasts.map { Self.wholeSeconds(max(.seconds(1), ($0.openFor ?? .seconds(60)) - (writtenAt - $0.at))) })::int4[],
                                  \(broadcasts.map(\.reason))::text[]) AS x(c, o, r)
                    """,
                    logger: logger
                )
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "writing circuit transitions failed")
        }
    }

    /// The database clock at a monotonic instant; read again when over an hour old, so
    /// drift between the two clocks stays negligible.
    private func clockAnchor(_ connection: PostgresConnection, logger: Logger) async throws -> ClockAnchor {
        if let anchor = anchor.withLock({ $0 }), ContinuousClock.now - anchor.instant < .seconds(3600) {
            return anchor
        }
        let sent = ContinuousClock.now
        var epoch = 0.0
        for try await value in try await connection.query("SELECT extract(epoch FROM clock_timestamp())::float8", logger: logger).decode(Double.self) {
            epoch = value
        }
        // The reading was taken somewhere during the round trip: take its middle.
        let received = ContinuousClock.now
        let reading = ClockAnchor(epoch: epoch, instant: sent + (received - sent) / 2)
        anchor.withLock { $0 = reading }
        return reading
    }

    static func wholeSeconds(_ duration: Duration) -> Int32 {
        Int32(min(max(0, duration.seconds.rounded(.up)), 86_400 * 365))
    }
}
