import Database
import Foundation
import Logging
import PostgresNIO

/// The `chips` table: the list selection caches, and the reservation that decides each send.
///
/// A reservation is one UPDATE of the chip's row that re-checks, under the row's lock, that
/// the chip is active and connected, under its daily limit, and past its next allowed send;
/// it counts the send and moves the next allowed send to now + the minimum interval + up to
/// `jitter` of it. Concurrent workers on any number of machines therefore never push a chip
/// over its limit or closer than its interval. Among the candidates, the least recently used
/// goes first.
public struct ChipStore: Sendable {
    /// A send counted against a chip, to give back if the message surely did not go out.
    public struct Reservation: Sendable, Hashable {
        public let chipID: String
        /// The calendar day the send was counted on (`2026-12-02`).
        public let day: String
    }

    public enum ReservationResult: Sendable, Hashable {
        case reserved(Reservation)
        /// None of the candidates can send now; the soonest of them may after `retryAfter`
        /// (nil when none will today: every one is at its limit, or none is eligible).
        case none(retryAfter: Duration?)
    }

    let client: PostgresClient
    /// The zone of the calendar day the daily limits count in.
    public let timeZone: String
    /// The extra random share of the minimum interval (0.2: 20 % at most), so chips sharing a
    /// rhythm drift apart (seed T04.3).
    public let jitter: Double

    public init(client: PostgresClient, timeZone: String = "America/Sao_Paulo", jitter: Double = 0.2) {
        self.client = client
        self.timeZone = timeZone
        self.jitter = jitter
    }

    /// Every chip that is not retired, default first then by id.
    public func chips(logger: Logger) async throws -> [Chip] {
        do {
            let rows = try await client.query(
                """
                SELECT id, nome, provider, instance, base_url, credential_env, client_token_env, status, is_default,
                       limite_diario, min_intervalo_segundos, connection_state
                  FROM chips WHERE status <> 'banido'
                 ORDER BY is_default DESC, id
                """,
                logger: logger
            )
            var chips: [Chip] = []
            for try await (id, nome, provider, instance, baseURL, credentialEnv, clientTokenEnv, status, isDefault, limit, interval, state)
                in rows.decode((String, String, String, String, String?, String, String?, String, Bool, Int32, Int32, String).self)
            {
                guard let provider = Chip.Provider(rawValue: provider), let status = Chip.Status(rawValue: status),
                    let state = Chip.ConnectionState(rawValue: state)
                else { continue }
                chips.append(
                    Chip(
                        id: id, nome: nome, provider: provider, instance: instance, baseURL: baseURL, credentialEnv: credentialEnv,
                        clientTokenEnv: clientTokenEnv, status: status, isDefault: isDefault, dailyLimit: Int(limit),
                        minimumInterval: .seconds(Int(interval)), connectionState: state
                    )
                )
            }
            return chips
        } catch {
            throw DatabaseError(wrapping: error, context: "reading the chips failed")
        }
    }

    /// Counts one send against the least recently used of `candidates` that may send now.
    public func reserve(among candidates: [String], logger: Logger) async throws -> ReservationResult {
        guard !candidates.isEmpty else { return .none(retryAfter: nil) }
        do {
            let rows = try await client.query(
                """
                WITH w AS (
                    SELECT (now() AT TIME ZONE \(timeZone))::date AS dia
                ), picked AS (
                    SELECT c.id FROM chips c, w
                     WHERE c.id = ANY(\(candidates))
                       AND c.status = 'ativo' AND c.connection_state IN ('open', 'unknown')
                       AND (c.uso_dia IS DISTINCT FROM w.dia OR c.uso_hoje < c.limite_diario)
                       AND (c.proximo_envio_at IS NULL OR c.proximo_envio_at <= clock_timestamp())
                     ORDER BY c.ultimo_envio_at NULLS FIRST, c.id
                     LIMIT 1
                     -- Waits for a reservation of the same chip to commit (one short statement)
                     -- and then checks the row again; one that no longer qualifies is passed
                     -- over for the next. Skipping locked rows instead would send to the
                     -- default chip whenever two workers reserve at once.
                     FOR UPDATE OF c
                ), reserved AS (
                    UPDATE chips c
                       SET uso_hoje = CASE WHEN c.uso_dia = w.dia THEN c.uso_hoje + 1 ELSE 1 END,
                           uso_dia = w.dia,
                           ultimo_envio_at = clock_timestamp(),
                           proximo_envio_at = clock_timestamp() + make_interval(secs => c.min_intervalo_segundos * (1 + random() * \(jitter)))
                      FROM picked, w
                     WHERE c.id = picked.id
                       -- Checked again on the row as locked: another worker may have sent meanwhile.
                       AND c.status = 'ativo' AND c.connection_state IN ('open', 'unknown')
                       AND (c.uso_dia IS DISTINCT FROM w.dia OR c.uso_hoje < c.limite_diario)
                       AND (c.proximo_envio_at IS NULL OR c.proximo_envio_at <= clock_timestamp())
                    RETURNING c.id
                )
                SELECT (SELECT id FROM reserved), w.dia::text FROM w
                """,
                logger: logger
            )
            for try await (chipID, day) in rows.decode((String?, String).self) {
                if let chipID { return .reserved(Reservation(chipID: chipID, day: day)) }
                return .none(retryAfter: try await soonest(among: candidates, logger: logger))
            }
            throw DatabaseError(.queryFailed, "the chip reservation returned no row")
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(wrapping: error, context: "reserving a chip failed")
        }
    }

    /// When the soonest of `candidates` may send, as committed now. A statement of its own:
    /// a reservation that waited for another worker's lock still reads the limits as of its
    /// own start, so it would count a chip the other has just filled as one only paced, and
    /// defer the message `no_chip:pacing` for a second instead of for the limit.
    private func soonest(among candidates: [String], logger: Logger) async throws -> Duration? {
        let rows = try await client.query(
            """
            SELECT extract(epoch FROM min(greatest(c.proximo_envio_at, clock_timestamp())) - clock_timestamp())::float8
              FROM chips c, (SELECT (now() AT TIME ZONE \(timeZone))::date AS dia) w
             WHERE c.id = ANY(\(candidates))
               AND c.status = 'ativo' AND c.connection_state IN ('open', 'unknown')
               AND (c.uso_dia IS DISTINCT FROM w.dia OR c.uso_hoje < c.limite_diario)
            """,
            logger: logger
        )
        for try await seconds in rows.decode(Double?.self) {
            return seconds.map { .seconds(max(0, $0)) }
        }
        return nil
    }

    /// Gives back a reservation whose message surely did not go out: the day's count only
    /// (the pacing stays, erring towards sending less often).
    public func release(_ reservation: Reservation, logger: Logger) async throws {
        do {
            _ = try await client.query(
                """
                UPDATE chips SET uso_hoje = greatest(0, uso_hoje - 1)
                 WHERE id = \(reservation.chipID) AND uso_dia = \(reservation.day)::date
                """,
                logger: logger
            ).collect()
        } catch {
            throw DatabaseError(wrapping: error, context: "giving back a chip reservation failed")
        }
    }

    /// Records what the connection monitor saw. `connection_since` is when the provider began
    /// reporting its last known state: it moves only when a reported state differs from the
    /// last one reported, so a check that got no answer (`unknown`) in between does not restart
    /// the count. Returns the seconds since then.
    @discardableResult
    public func recordConnection(chipID: String, state: Chip.ConnectionState, detail: String, logger: Logger) async throws -> Double? {
        let known: String? = state == .unknown ? nil : state.rawValue
        do {
            let rows = try await client.query(
                """
                UPDATE chips
                   SET connection_since = CASE WHEN \(known)::text IS NULL THEN connection_since
                                               WHEN connection_known_state = \(known)::text AND connection_since IS NOT NULL THEN connection_since
                                               ELSE now() END,
                       connection_known_state = coalesce(\(known)::text, connection_known_state),
                       connection_state = \(state.rawValue),
                       connection_checked_at = now(),
                       connection_detail = \(String(detail.prefix(500)))
                 WHERE id = \(chipID)
                RETURNING extract(epoch FROM now() - connection_since)::float8
                """,
                logger: logger
            )
            for try await seconds in rows.decode(Double.self) { return seconds }
            return nil
        } catch {
            throw DatabaseError(wrapping: error, context: "recording a chip's connection state failed")
        }
    }
}
