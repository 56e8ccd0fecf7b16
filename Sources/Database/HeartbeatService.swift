import Logging
import PostgresNIO
import Primitives
import ServiceLifecycle

/// Upserts this process's `worker_heartbeats` row every `interval` (seed T01.6).
///
/// A failed write is logged and retried on the next tick; it never stops the process.
public struct HeartbeatService: Service {
    public let client: PostgresClient
    public let identity: ProcessIdentity
    public let stats: ProcessStats
    public let interval: Duration
    /// What the process wants seen in its row's `metadata` besides `paused` (its sender's
    /// circuits and rate-limit store, say), read at every beat.
    public let details: @Sendable () -> [String: JSONValue]
    let logger: Logger

    public init(
        client: PostgresClient,
        identity: ProcessIdentity,
        stats: ProcessStats,
        interval: Duration = .seconds(5),
        details: @escaping @Sendable () -> [String: JSONValue] = { [:] },
        logger: Logger
    ) {
        self.client = client
        self.identity = identity
        self.stats = stats
        // Beats further apart than a third of the gap would break the process's own continuity.
        self.interval = min(interval, Self.continuityGap / 3)
        self.details = details
        self.logger = logger
    }

    /// Beats until graceful shutdown reaches this service (after the services started later
    /// in the group, such as the worker, have stopped), then writes a last row: `stopped`.
    public func run() async throws {
        var failing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await withDeadline(interval, what: "the heartbeat") { try await self.beat() }
                if failing {
                    logger.info("heartbeat written again")
                    failing = false
                }
            } catch {
                if !failing {
                    logger.error("heartbeat write failed; retrying every \(interval)", metadata: ["error": .string(String(reflecting: error))])
                    failing = true
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
        stats.set(.stopped)
        try? await withDeadline(.seconds(2), what: "the last heartbeat") { try await self.beat() }
    }

    /// The longest a healthy process leaves between two beats (three intervals of 5 s). A
    /// longer silence means the database was out of reach for it: its run of beats starts
    /// again (`beating_since`), and it cannot vouch for the database until it has beaten
    /// without such a gap for a whole heartbeat timeout. Any timeout must be well above this.
    public static let continuityGap: Duration = .seconds(15)

    /// Writes the row now.
    public func beat(status: ProcessStats.Status? = nil) async throws {
        let status = status ?? stats.status
        var metadata = details()
        if let paused = stats.paused { metadata["paused"] = .string(paused) }
        let metadataText = JSONValue.object(metadata).text
        // The age on this process's monotonic clock, the instant from the database's: no
        // comparison between the two machines' clocks.
        let claimLoopAge = stats.claimLoopAge.map { max(0, $0.seconds) }
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, in_flight, processed_total, status, metadata, claim_loop_at)
            VALUES (\(identity.id), \(identity.kind.rawValue), \(identity.host), \(identity.pid), \(identity.version),
                    \(Int32(stats.inFlight)), \(Int64(stats.processed)), \(status.rawValue),
                    \(metadataText)::jsonb, now() - make_interval(secs => \(claimLoopAge)::float8))
            ON CONFLICT (id) DO UPDATE
               SET last_seen_at = now(),
                   beating_since = CASE
                       WHEN worker_heartbeats.last_seen_at < now() - fila_heartbeat_gap()
                         OR worker_heartbeats.status = 'stopped'
                       THEN now() ELSE worker_heartbeats.beating_since END,
                   in_flight = excluded.in_flight,
                   processed_total = excluded.processed_total, status = excluded.status,
                   metadata = excluded.metadata, claim_loop_at = excluded.claim_loop_at
            """,
            logger: logger
        )
    }
}
