#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO

/// A breaker held open or closed by hand (`circuit_overrides`).
public struct CircuitOverride: Sendable, Hashable {
    public let circuit: String
    public let state: CircuitState
    public let reason: String
    public let setBy: String
    public let expiresAt: Date?
}

/// One row of `circuit_transitions`.
public struct CircuitTransitionRecord: Sendable, Hashable {
    public let circuit: String
    public let from: CircuitState
    public let to: CircuitState
    public let reason: String
    public let consecutiveFailures: Int
    public let openSeconds: Int?
    public let workerID: String?
    public let createdAt: Date
}

/// A circuit as every live process sees it (the health issue's "current state per circuit").
public struct CircuitStatus: Sendable, Hashable {
    public let circuit: String
    /// The override in force, if any.
    public let override: CircuitState?
    /// How many live processes last recorded each state (a process that never recorded a
    /// transition has the circuit CLOSED and is not counted).
    public let processesByState: [CircuitState: Int]
    /// The latest transition of any process.
    public let lastChange: Date?

    /// The worst state any live process is in: what health should report.
    public var worstState: CircuitState {
        if let override { return override }
        for state in [CircuitState.open, .halfOpen] where (processesByState[state] ?? 0) > 0 { return state }
        return .closed
    }
}

/// Read-only queries over the breakers' tables, for health endpoints and `fila status`.
public enum CircuitReport {
    /// The overrides in force now.
    public static func overrides(client: PostgresClient, logger: Logger) async throws -> [CircuitOverride] {
        do {
            let rows = try await client.query(
                """
                SELECT circuit_name, state, reason, set_by, expires_at
                  FROM circuit_overrides
                 WHERE expires_at IS NULL OR expires_at > now()
                 ORDER BY circuit_name
                """,
                logger: logger
            )
            var overrides: [CircuitOverride] = []
            for try await (name, state, reason, setBy, expiresAt) in rows.decode((String, String, String, String, Date?).self) {
                guard let state = CircuitState(rawValue: state) else { continue }
                overrides.append(CircuitOverride(circuit: name, state: state, reason: reason, setBy: setBy, expiresAt: expiresAt))
            }
            return overrides
        } catch {
            throw DatabaseError(wrapping: error, context: "reading circuit overrides failed")
        }
    }

    /// Each circuit's state across live processes, with overrides; circuits known only from
    /// an override are included.
    public static func currentStates(client: PostgresClient, logger: Logger) async throws -> [CircuitStatus] {
        do {
            let rows = try await client.query(
                """
                WITH live AS (
                    SELECT circuit_name, state, count(*)::int4 AS processes, max(since) AS last_change
                      FROM ops.circuit_states GROUP BY circuit_name, state
                ), names AS (
                    SELECT circuit_name FROM live
                    UNION SELECT circuit_name FROM circuit_overrides WHERE expires_at IS NULL OR expires_at > now()
                )
                SELECT n.circuit_name, o.state, l.state, coalesce(l.processes, 0), l.last_change
                  FROM names n
                  LEFT JOIN live l USING (circuit_name)
                  LEFT JOIN circuit_overrides o ON o.circuit_name = n.circuit_name
                       AND (o.expires_at IS NULL OR o.expires_at > now())
                 ORDER BY n.circuit_name
                """,
                logger: logger
            )
            var byName: [String: (override: CircuitState?, states: [CircuitState: Int], last: Date?)] = [:]
            var order: [String] = []
            for try await (name, override, state, processes, last) in rows.decode((String, String?, String?, Int32, Date?).self) {
                if byName[name] == nil {
                    order.append(name)
                    byName[name] = (override.flatMap(CircuitState.init(rawValue:)), [:], nil)
                }
                if let state = state.flatMap(CircuitState.init(rawValue:)) {
                    byName[name]!.states[state, default: 0] += Int(processes)
                }
                if let last, last > (byName[name]!.last ?? .distantPast) { byName[name]!.last = last }
            }
            return order.map { name in
                let entry = byName[name]!
                return CircuitStatus(circuit: name, override: entry.override, processesByState: entry.states, lastChange: entry.last)
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "reading circuit states failed")
        }
    }

    /// A circuit another live process holds OPEN, and for how much longer.
    public struct OpenElsewhere: Sendable, Hashable {
        public let circuit: String
        public let workerID: String
        public let reason: String
        public let remaining: Duration
    }

    /// Circuits whose latest transition in some other live process is to OPEN and whose
    /// wait has not yet passed; the longest remaining wait per circuit.
    public static func openElsewhere(excluding processID: String, client: PostgresClient, logger: Logger) async throws -> [OpenElsewhere] {
        do {
            let rows = try await client.query(
                """
                WITH latest AS (
                    SELECT DISTINCT ON (t.circuit_name, t.worker_id)
                           t.circuit_name, t.worker_id, t.to_state, t.reason,
                           extract(epoch FROM t.created_at + make_interval(secs => coalesce(t.open_seconds, 0)) - now())::float8 AS remaining
                      FROM circuit_transitions t
                      JOIN worker_heartbeats h ON h.id = t.worker_id
                     WHERE t.worker_id <> \(processID)
                       AND fila_process_alive(h)
                       AND t.created_at > now() - interval '1 day'
                     ORDER BY t.circuit_name, t.worker_id, t.id DESC
                )
                SELECT DISTINCT ON (circuit_name) circuit_name, worker_id, reason, remaining
                  FROM latest
                 WHERE to_state = 'OPEN' AND remaining > 0
                   -- Followers' rows repeat someone else's decision: go to the source.
                   AND reason NOT LIKE 'opened by %'
                 ORDER BY circuit_name, remaining DESC
                """,
                logger: logger
            )
            var result: [OpenElsewhere] = []
            for try await (circuit, workerID, reason, remaining) in rows.decode((String, String, String, Double).self) {
                result.append(OpenElsewhere(circuit: circuit, workerID: workerID, reason: reason, remaining: .seconds(remaining)))
            }
            return result
        } catch {
            throw DatabaseError(wrapping: error, context: "reading open circuits failed")
        }
    }

    /// Transitions over the last `hours` hours, newest first, for one circuit or all.
    public static func transitions(
        circuit: String? = nil,
        hours: Int,
        limit: Int = 500,
        client: PostgresClient,
        logger: Logger
    ) async throws -> [CircuitTransitionRecord] {
        do {
            let rows = try await client.query(
                """
                SELECT circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id, created_at
                  FROM circuit_transitions
                 WHERE created_at > now() - make_interval(hours => \(Int32(clamping: hours)))
                   AND (\(circuit)::text IS NULL OR circuit_name = \(circuit))
                 ORDER BY created_at DESC, id DESC
                 LIMIT \(Int32(clamping: limit))
                """,
                logger: logger
            )
            var records: [CircuitTransitionRecord] = []
            for try await (name, from, to, reason, failures, openSeconds, workerID, createdAt)
                in rows.decode((String, String, String, String, Int32, Int32?, String?, Date).self)
            {
                guard let from = CircuitState(rawValue: from), let to = CircuitState(rawValue: to) else { continue }
                records.append(CircuitTransitionRecord(
                    circuit: name, from: from, to: to, reason: reason, consecutiveFailures: Int(failures),
                    openSeconds: openSeconds.map(Int.init), workerID: workerID, createdAt: createdAt
                ))
            }
            return records
        } catch {
            throw DatabaseError(wrapping: error, context: "reading circuit transitions failed")
        }
    }
}
