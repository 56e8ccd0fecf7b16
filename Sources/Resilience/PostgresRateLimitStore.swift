import Database
import Foundation
import Logging
import PostgresNIO

/// The rate limiter's store of record: `rate_limit_counters`, one row per doctor per day.
/// Every admission is decided here, whether Redis is configured or not.
///
/// A check is one statement: an upsert that adds the weight only if the total stays within
/// the budget. `ON CONFLICT DO UPDATE … WHERE` locks the row and re-evaluates the condition
/// against the latest committed total, so concurrent workers on any number of machines can
/// never admit more than the budget. The day and the time to the next window come from the
/// database's `now()` in the policy's zone.
public struct PostgresRateLimitStore: Sendable {
    public struct Consumption: Sendable, Hashable {
        public let allowed: Bool
        /// The weight spent in the window (after this check when allowed).
        public let used: Int
        public let window: String
        public let untilNextWindow: Duration
        /// The row's change count (`versao`) that `used` belongs to: orders copies in Redis.
        public let version: Int64
    }

    /// A window's count after a refund.
    public struct Count: Sendable, Hashable {
        public let used: Int
        public let version: Int64
    }

    let client: PostgresClient

    public init(client: PostgresClient) {
        self.client = client
    }

    public func consume(key: String, weight: Int, limit: Int, timeZone: String, logger: Logger) async throws -> Consumption {
        do {
            let rows = try await client.query(
                """
                WITH w AS (
                    SELECT (now() AT TIME ZONE \(timeZone))::date AS janela
                ), admitted AS (
                    INSERT INTO rate_limit_counters AS c (cliente_id, janela, usado, versao)
                    SELECT \(key), w.janela, \(Int32(clamping: weight)), 1 FROM w
                     WHERE \(Int32(clamping: weight)) <= \(Int32(clamping: limit))
                    ON CONFLICT (cliente_id, janela) DO UPDATE
                       SET usado = c.usado + excluded.usado, versao = c.versao + 1, updated_at = now()
                     WHERE c.usado + excluded.usado <= \(Int32(clamping: limit))
                    RETURNING usado, versao
                ), existing AS (
                    SELECT r.usado, r.versao FROM rate_limit_counters r, w WHERE r.cliente_id = \(key) AND r.janela = w.janela
                )
                SELECT (SELECT usado FROM admitted), (SELECT versao FROM admitted),
                       (SELECT usado FROM existing), (SELECT versao FROM existing),
                       w.janela::text,
                       extract(epoch FROM ((w.janela + 1)::timestamp AT TIME ZONE \(timeZone)) - now())::float8
                  FROM w
                """,
                logger: logger
            )
            for try await (admitted, admittedVersion, existing, existingVersion, window, seconds)
                in rows.decode((Int32?, Int64?, Int32?, Int64?, String, Double).self)
            {
                return Consumption(
                    allowed: admitted != nil,
                    used: Int(admitted ?? existing ?? 0),
                    window: window,
                    untilNextWindow: .seconds(max(0, seconds)),
                    version: admittedVersion ?? existingVersion ?? 0
                )
            }
            throw DatabaseError(.queryFailed, "the rate-limit check returned no row")
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "rate-limit check failed")
        }
    }

    /// Gives back weight admitted for a message that was not sent after all; returns the
    /// window's count after it (nil when the window has no row).
    @discardableResult
    public func refund(key: String, weight: Int, window: String, logger: Logger) async throws -> Count? {
        do {
            let rows = try await client.query(
                """
                UPDATE rate_limit_counters
                   SET usado = greatest(0, usado - \(Int32(clamping: weight))), versao = versao + 1, updated_at = now()
                 WHERE cliente_id = \(key) AND janela = \(window)::date
                RETURNING usado, versao
                """,
                logger: logger
            )
            for try await (used, version) in rows.decode((Int32, Int64).self) {
                return Count(used: Int(used), version: version)
            }
            return nil
        } catch {
            throw DatabaseError(wrapping: error, context: "rate-limit refund failed")
        }
    }

    /// Deletes windows older than `days` days (retention).
    public func deleteWindows(olderThanDays days: Int, logger: Logger) async throws -> Int {
        do {
            let rows = try await client.query(
                """
                WITH gone AS (
                    DELETE FROM rate_limit_counters WHERE janela < current_date - \(Int32(clamping: days))
                    RETURNING 1
                )
                SELECT count(*)::int8 FROM gone
                """,
                logger: logger
            )
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return 0
        } catch {
            throw DatabaseError(wrapping: error, context: "deleting old rate-limit windows failed")
        }
    }
}
