#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO
import Primitives

/// Where evaluators report what they found. It records every condition in `alert_state`
/// and decides, in one transaction holding the conditions' row locks, which evaluations
/// become notifications (`alert_events` rows, sent later by `AlertDeliveryService`). Two
/// evaluators reporting the same condition at once, on any replicas, queue one notification:
/// the second waits for the first's lock and then sees its notification.
///
/// ```swift
/// let store = AlertStore(client: client)
/// let cooldown = try await store.settings(for: "fila_acumulada", logger: logger)
///     .duration("cooldown_seconds", default: .seconds(3600))
/// try await store.report(rule: "fila_acumulada", firing: backlog ? [alert] : [], cooldown: cooldown, logger: logger)
/// ```
public struct AlertStore: Sendable {
    /// A notification the store queued.
    public struct Event: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable {
            case firing, resolved
        }

        public let id: Int
        public let rule: String
        public let key: String
        public let kind: Kind
        public let title: String
    }

    let client: PostgresClient

    public init(client: PostgresClient) {
        self.client = client
    }

    /// Records one evaluation of `rule`. `firing` holds every instance of the rule that
    /// fires now; an instance that fired before and is not in it has cleared, and is
    /// resolved once it was last seen firing `resolveAfter` ago. Returns the notifications
    /// queued (none while a condition keeps firing within `cooldown`).
    @discardableResult
    public func report(rule: String, firing: [Alert], cooldown: Duration, resolveAfter: Duration = .zero, logger: Logger) async throws -> [Event] {
        guard Alert.isValidRule(rule) else {
            throw DatabaseError(.queryFailed, "alert rule '\(rule)' is not a valid rule name (lowercase letters, digits, _)")
        }
        var alerts: [String: Alert] = [:]
        for alert in firing where alert.rule == rule {
            alerts[alert.key] = alert
        }
        let keys = alerts.keys.sorted()
        do {
            return try await client.withTransaction(logger: logger) { connection in
                // Rows for new conditions first, in key order (so concurrent reporters queue on
                // the same row instead of deadlocking); an existing row is left as it is.
                try await connection.query(
                    """
                    INSERT INTO alert_state (rule, key)
                    SELECT \(rule), k FROM unnest(\(keys)::text[]) AS k ORDER BY k
                    ON CONFLICT (rule, key) DO NOTHING
                    """,
                    logger: logger
                )
                // The locks every decision below is taken under. The clock is read after
                // they are held, so a reporter that waited sees the time after the one it
                // waited for.
                let rows = try await connection.query(
                    """
                    SELECT s.key, s.firing, s.last_notified_at, s.last_seen_at, s.first_seen_at, s.title, s.text, s.payload::text
                      FROM alert_state s
                     WHERE s.rule = \(rule) AND (s.firing OR s.key = ANY(\(keys)::text[]))
                     ORDER BY s.key
                       FOR UPDATE
                    """,
                    logger: logger
                )
                var stored: [(key: String, state: AlertStateMachine.State, since: Date?, title: String, text: String, payload: String)] = []
                for try await (key, isFiring, lastNotified, lastSeen, since, title, text, payload) in rows.decode((String, Bool, Date?, Date?, Date?, String, String, String).self) {
                    stored.append((key, .init(firing: isFiring, lastNotifiedAt: lastNotified, lastSeenAt: lastSeen), since, title, text, payload))
                }
                var clock: Date?
                for try await value in try await connection.query("SELECT clock_timestamp()", logger: logger).decode(Date.self) {
                    clock = value
                }
                guard let now = clock else {
                    throw DatabaseError(.queryFailed, "recording alert \(rule): the database returned no time")
                }

                var changes = (keys: [String](), actions: [String](), titles: [String](), texts: [String](), payloads: [String]())
                var events = (keys: [String](), kinds: [String](), titles: [String](), texts: [String](), payloads: [String]())
                for row in stored {
                    let alert = alerts[row.key]
                    let action = AlertStateMachine.decide(row.state, firing: alert != nil, now: now, cooldown: cooldown, resolveAfter: resolveAfter)
                    guard action != .none, action != .clearing else { continue }
                    let payload = alert?.payload.text ?? row.payload
                    changes.keys.append(row.key)
                    changes.actions.append(action.rawValue)
                    changes.titles.append(alert?.title ?? row.title)
                    changes.texts.append(alert?.text ?? row.text)
                    changes.payloads.append(payload)
                    guard action.notifies else { continue }
                    events.keys.append(row.key)
                    if let alert {
                        events.kinds.append(Event.Kind.firing.rawValue)
                        events.titles.append(alert.title)
                        events.texts.append(alert.text)
                        events.payloads.append(payload)
                    } else {
                        let minutes = row.since.map { Int(now.timeIntervalSince($0) / 60) }
                        events.kinds.append(Event.Kind.resolved.rawValue)
                        events.titles.append("Resolvido: \(row.title)")
                        events.texts.append(minutes.map { "A condição `\(rule)` deixou de ocorrer após \($0) min." } ?? "A condição `\(rule)` deixou de ocorrer.")
                        events.payloads.append(payload)
                    }
                }
                guard !changes.keys.isEmpty else { return [] }

                try await connection.query(
                    """
                    UPDATE alert_state s
                       SET firing = u.action <> 'resolve',
                           first_seen_at = CASE WHEN u.action = 'fire' THEN \(now) ELSE s.first_seen_at END,
                           last_seen_at = CASE WHEN u.action <> 'resolve' THEN \(now) ELSE s.last_seen_at END,
                           last_notified_at = CASE WHEN u.action IN ('fire', 'renotify', 'resolve') THEN \(now) ELSE s.last_notified_at END,
                           resolved_at = CASE u.action WHEN 'resolve' THEN \(now) WHEN 'fire' THEN NULL ELSE s.resolved_at END,
                           notifications = CASE u.action WHEN 'fire' THEN 1 WHEN 'renotify' THEN s.notifications + 1 ELSE s.notifications END,
                           title = u.title, text = u.text, payload = u.payload::jsonb, updated_at = \(now)
                      FROM unnest(\(changes.keys)::text[], \(changes.actions)::text[], \(changes.titles)::text[],
                                  \(changes.texts)::text[], \(changes.payloads)::text[]) AS u(key, action, title, text, payload)
                     WHERE s.rule = \(rule) AND s.key = u.key
                    """,
                    logger: logger
                )
                guard !events.keys.isEmpty else { return [] }
                let inserted = try await connection.query(
                    """
                    INSERT INTO alert_events (rule, key, kind, title, text, payload, created_at, next_attempt_at)
                    SELECT \(rule), u.key, u.kind, u.title, u.text, u.payload::jsonb, \(now), \(now)
                      FROM unnest(\(events.keys)::text[], \(events.kinds)::text[], \(events.titles)::text[],
                                  \(events.texts)::text[], \(events.payloads)::text[]) AS u(key, kind, title, text, payload)
                    RETURNING id, key, kind, title
                    """,
                    logger: logger
                )
                var queued: [Event] = []
                for try await (id, key, kind, title) in inserted.decode((Int, String, String, String).self) {
                    queued.append(Event(id: id, rule: rule, key: key, kind: Event.Kind(rawValue: kind) ?? .firing, title: title))
                }
                return queued.sorted { $0.id < $1.id }
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "recording alert \(rule)")
        }
    }
}
