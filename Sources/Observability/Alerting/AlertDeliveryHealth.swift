import Database
import Logging
import PostgresNIO
import Primitives

/// The health of alert delivery, across every process, from `alert_events` and the
/// heartbeats: whether anyone is told when something fails.
public enum AlertDeliveryHealth {
    /// How long an undelivered notification may wait before delivery counts as behind.
    public static let lateAfterSeconds = 600

    /// `alerts:delivery` (in `/health/deep`): `fail` when Slack refused the latest delivery
    /// in the last 24 hours (a configuration error: the webhook URL is wrong or revoked);
    /// `warn` when no live process has a webhook (notifications are off: alerts are only
    /// logged), or when a notification has waited over 10 minutes (Slack unreachable or
    /// rate limiting); `pass` otherwise. The value is the number of undelivered
    /// notifications; no error text, no URL.
    public static func delivery(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "alerts", measurement: "delivery", componentType: .component) {
            let rows = try await client.query(
                """
                SELECT (SELECT count(*) FROM worker_heartbeats h
                         WHERE h.metadata->>'alerts' = 'slack' AND fila_process_alive(h))::int8,
                       (SELECT count(*) FROM alert_events WHERE status = 'pending')::int8,
                       (SELECT floor(extract(epoch FROM now() - min(created_at))) FROM alert_events WHERE status = 'pending')::int8,
                       (SELECT count(*) FROM alert_events WHERE status = 'failed' AND created_at > now() - interval '24 hours')::int8,
                       coalesce((SELECT status = 'failed' FROM alert_events
                                  WHERE status IN ('sent', 'failed') AND created_at > now() - interval '24 hours'
                                  ORDER BY coalesce(sent_at, created_at) DESC, id DESC LIMIT 1), false)
                """,
                logger: logger
            ).collect()
            guard let (delivering, pending, oldestPending, failed, lastFailed) = try rows.first?.decode((Int, Int, Int?, Int, Bool).self) else {
                throw DatabaseError(.queryFailed, "reading alert delivery: no row")
            }
            let status: HealthStatus
            let output: String?
            if lastFailed {
                status = .fail
                output = "Slack refused the latest alert: check SLACK_WEBHOOK_URL (alert_events.last_error says why)"
            } else if delivering == 0 {
                status = .warn
                output = "notifications are off: no live process has SLACK_WEBHOOK_URL, alerts are only recorded and logged"
            } else if let oldestPending, oldestPending > lateAfterSeconds {
                status = .warn
                output = "an alert has waited \(oldestPending) s for delivery: Slack is unreachable or rate limiting"
            } else {
                status = .pass
                output = nil
            }
            return HealthObservation(
                status: status, observedValue: .integer(pending), observedUnit: "undelivered",
                output: output,
                details: ["delivering_processes": .integer(delivering), "failed_24h": .integer(failed), "oldest_undelivered_seconds": oldestPending.map { .integer($0) } ?? .null]
            )
        }
    }
}
