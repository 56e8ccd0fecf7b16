import Logging
import PostgresNIO

/// Every reservation of a chip, as Postgres stamped it (`chips.ultimo_envio_at`), copied by a
/// trigger into a table of the test's database: tests of pacing read the gaps by the
/// database's clock, since when a request then reaches a fake depends on the machine's load.
///
/// ```swift
/// try await ChipReservationLog.install(client: client, logger: logger)
/// … drain …
/// for gap in try await ChipReservationLog.closestGaps(client: client, logger: logger) {
///     #expect(gap.seconds >= 2, "\(gap.chip)")
/// }
/// ```
public enum ChipReservationLog {
    /// The closest two reservations of one chip, and how many intervals it had.
    public struct Gap: Sendable {
        public let chip: String
        public let seconds: Double
        public let intervals: Int
    }

    public static func install(client: PostgresClient, logger: Logger) async throws {
        for statement in [
            "CREATE TABLE test_reservas (chip text NOT NULL, at timestamptz NOT NULL)",
            """
            CREATE FUNCTION test_reserva() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO test_reservas VALUES (NEW.id, NEW.ultimo_envio_at); RETURN NEW; END $$
            """,
            """
            CREATE TRIGGER test_reserva AFTER UPDATE OF ultimo_envio_at ON chips FOR EACH ROW
            WHEN (NEW.ultimo_envio_at IS DISTINCT FROM OLD.ultimo_envio_at) EXECUTE FUNCTION test_reserva()
            """,
        ] {
            _ = try await client.query(PostgresQuery(unsafeSQL: statement), logger: logger).collect()
        }
    }

    /// Per chip with two reservations or more, by chip id.
    public static func closestGaps(client: PostgresClient, logger: Logger) async throws -> [Gap] {
        try await client.query(
            """
            SELECT chip, min(gap)::float8, count(*)::int8 FROM (
                SELECT chip, extract(epoch FROM at - lag(at) OVER (PARTITION BY chip ORDER BY at)) AS gap FROM test_reservas) g
             WHERE gap IS NOT NULL GROUP BY chip ORDER BY chip
            """,
            logger: logger
        ).collect().map {
            let (chip, seconds, intervals) = try $0.decode((String, Double, Int).self)
            return Gap(chip: chip, seconds: seconds, intervals: intervals)
        }
    }
}
