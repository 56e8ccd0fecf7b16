import Logging
import PostgresNIO

/// What health needs to know of Postgres itself: that it answers, and the internals the
/// queue's peers keep tripping over (design rule 6). Plain values: the checks built on them
/// live above this module, next to the health types.
public enum PostgresProbe {
    /// Round-trips `SELECT 1`, returning how long it took.
    public static func ping(client: PostgresClient, logger: Logger) async throws -> Duration {
        let start = ContinuousClock.now
        do {
            _ = try await client.query("SELECT 1", logger: logger).collect()
        } catch {
            throw DatabaseError(wrapping: error, context: "SELECT 1 failed")
        }
        return ContinuousClock.now - start
    }

    /// The numbers `/health/deep` reports.
    public struct Internals: Sendable, Hashable {
        /// Dead tuples in `fila_mensagens` (pg_stat_user_tables; the statistics are
        /// collected asynchronously, so this lags by a moment).
        public let deadTuples: Int
        public let liveTuples: Int
        /// The age of the oldest transaction still open in this database, in seconds; 0 when
        /// none is. A long one holds back vacuum on every table, the queue's above all.
        public let oldestTransactionSeconds: Double
        /// `pg_notification_queue_usage()`, 0-1: NOTIFY fails once it reaches 1.
        public let notificationQueueUsage: Double
    }

    public static func internals(client: PostgresClient, logger: Logger) async throws -> Internals {
        do {
            let row = try await client.query(
                """
                SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                                  WHERE relid = 'fila_mensagens'::regclass), 0)::int8,
                       coalesce((SELECT n_live_tup FROM pg_stat_user_tables
                                  WHERE relid = 'fila_mensagens'::regclass), 0)::int8,
                       coalesce((SELECT extract(epoch FROM now() - min(xact_start))
                                   FROM pg_stat_activity
                                  WHERE datname = current_database() AND xact_start IS NOT NULL
                                    AND pid <> pg_backend_pid()), 0)::float8,
                       pg_notification_queue_usage()::float8
                """,
                logger: logger
            ).collect().first
            guard let row else { throw DatabaseError(.queryFailed, "the internals query returned no row") }
            let (dead, live, oldest, usage) = try row.decode((Int, Int, Double, Double).self)
            return Internals(deadTuples: dead, liveTuples: live, oldestTransactionSeconds: oldest, notificationQueueUsage: usage)
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "reading Postgres internals failed")
        }
    }
}
