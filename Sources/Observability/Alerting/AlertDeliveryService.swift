#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Metrics
import PostgresNIO
import Primitives
import ServiceLifecycle
import Synchronization

/// Sends the notifications `AlertStore` queued in `alert_events` to Slack: an outbox loop.
///
/// Each tick claims the due `pending` events with `FOR UPDATE SKIP LOCKED`, moving their
/// `next_attempt_at` forward as a lease, so replicas running this service never send one
/// event twice (a replica that dies mid-send leaves it to be sent again after the lease).
/// Slack down or rate limiting: the event stays `pending` with a later `next_attempt_at`
/// (Slack's `Retry-After`, or a backoff) and goes out on a later tick. Slack refusing the
/// webhook (403, 404, invalid payload): the event is `failed` with the reason, and `status`
/// shows it.
///
/// Every long-running process runs one, so an alert raised anywhere goes out while any
/// process with a webhook lives. A process announces in its heartbeat's metadata whether it
/// delivers (`"alerts": "slack"`, see `announcement`). One without a webhook leaves the
/// events to those that have one; only when no live process delivers does it log each due
/// event and mark it `disabled`, so nothing waits forever unseen.
///
/// ```swift
/// let delivery = AlertDeliveryService(client: client, notifier: SecretURL(url).map { SlackNotifier(url: $0) }, logger: logger)
/// // in the process's ServiceGroup; `delivery.announcement` in its heartbeat's details
/// ```
public final class AlertDeliveryService: Service, Sendable {
    public struct Configuration: Sendable {
        /// How often due events are looked for.
        public var pollInterval: Duration
        /// Events claimed per tick.
        public var batchSize: Int
        /// How long a claimed event is left to its claimer before another replica may send it.
        public var lease: Duration
        /// The wait before retrying an event whose post failed without a `Retry-After`.
        public var backoff: Backoff
        /// The pause between two posts: Slack allows about one message per second per webhook.
        public var spacing: Duration

        public init(
            pollInterval: Duration = .seconds(5),
            batchSize: Int = 20,
            lease: Duration = .seconds(120),
            backoff: Backoff = Backoff(base: .seconds(10), multiplier: 2, maximum: .seconds(300), jitter: .proportional(0.2)),
            spacing: Duration = .seconds(1)
        ) {
            self.pollInterval = pollInterval
            self.batchSize = batchSize
            self.lease = lease
            self.backoff = backoff
            self.spacing = spacing
        }
    }

    /// What the last delivery attempt showed, for health reporting.
    public enum Status: Sendable, Hashable {
        /// No webhook URL: notifications are only logged.
        case off
        /// Nothing sent yet by this process.
        case idle
        /// The last post was delivered.
        case delivering
        /// The last post failed in a way a later tick retries (Slack down, 5xx, 429).
        case retrying(reason: String)
        /// Slack refused the webhook or the payload: a configuration error a person must fix.
        case misconfigured(reason: String)
    }

    /// What one tick did.
    public struct Round: Sendable, Hashable {
        public var sent = 0
        public var retrying = 0
        public var failed = 0
        public var disabled = 0

        public init() {}
    }

    public let configuration: Configuration
    private let client: PostgresClient
    private let notifier: SlackNotifier?
    private let logger: Logger
    private let lastStatus: Mutex<Status>
    private let outcomes: MetricFamily<Counter>

    public static let slackAlerts = MetricDescriptor(
        "wa_slack_alerts_sent_total", .counter, labels: ["outcome"],
        help: "Slack posts of alert events by outcome: sent, rejected (Slack refused the webhook), retrying (Slack down or 429), disabled (no SLACK_WEBHOOK_URL)."
    )

    /// - Parameter notifier: nil when no webhook URL is configured (events are logged and
    ///   marked `disabled`). The service shuts it down when `run()` ends.
    public init(client: PostgresClient, notifier: SlackNotifier?, configuration: Configuration = .init(), metricsFactory: any MetricsFactory = MetricsSystem.factory, logger: Logger) {
        self.client = client
        self.outcomes = .counter(Self.slackAlerts, factory: metricsFactory)
        self.notifier = notifier
        self.configuration = configuration
        self.logger = logger
        lastStatus = Mutex(notifier == nil ? .off : .idle)
    }

    public var status: Status { lastStatus.withLock { $0 } }

    /// What the process's heartbeat says of its alert delivery: `"alerts": "slack"` when it
    /// posts to Slack, `"off"` when it has no webhook.
    public var announcement: [String: JSONValue] {
        ["alerts": .string(notifier == nil ? Self.off : Self.slack)]
    }

    static let slack = "slack"
    static let off = "off"

    public func run() async throws {
        if notifier == nil {
            logger.warning("SLACK_WEBHOOK_URL is not set: alerts are recorded in alert_events and logged, not sent")
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    _ = try await self.deliverDue()
                } catch {
                    // Cut off by the shutdown (waiting on Postgres, say): nothing failed.
                    guard !Task.isCancelled else { break }
                    // Postgres unreachable: the events wait in the table; the next tick tries again.
                    self.logger.error("cannot deliver alerts", metadata: ["error": .string(String(reflecting: error))])
                }
                try? await Task.sleep(for: self.configuration.pollInterval)
            }
        }
        try? await notifier?.shutdown()
    }

    /// One tick: claims the due pending events and sends them (or, with no webhook, marks
    /// them disabled after logging them).
    public func deliverDue() async throws -> Round {
        guard let notifier else { return try await disableDue() }
        var round = Round()
        let claimed = try await claim()
        for (index, event) in claimed.enumerated() {
            if index > 0 { try? await Task.sleep(for: configuration.spacing) }
            let result = await notifier.post(event.message, logger: logger)
            let eventLogger = logger.with(event)
            switch result {
            case .delivered:
                try await finish(event, status: "sent", error: nil)
                round.sent += 1
                outcomes("sent").increment()
                lastStatus.withLock { $0 = .delivering }
                eventLogger.info("alert sent to Slack")
            case .rejected(let status, let reason):
                try await finish(event, status: "failed", error: reason)
                round.failed += 1
                outcomes("rejected").increment()
                lastStatus.withLock { $0 = .misconfigured(reason: reason) }
                eventLogger.error("Slack refused the alert; check SLACK_WEBHOOK_URL", metadata: ["slack.status": .stringConvertible(status), "slack.error": .string(reason)])
            case .retryLater(let after, let reason):
                // Slack is down or asks to slow down: this event and the rest of the batch
                // wait (the rest without an attempt counted), the same time.
                let delay = after ?? configuration.backoff.delay(forAttempt: event.attempts)
                try await postpone(event, untried: claimed[(index + 1)...].map(\.id), by: delay, error: reason)
                round.retrying += claimed.count - index
                outcomes("retrying").increment()
                lastStatus.withLock { $0 = .retrying(reason: reason) }
                eventLogger.warning("cannot send the alert to Slack yet; retrying later", metadata: ["slack.error": .string(reason), "slack.retry_in_seconds": .stringConvertible(Int(delay.seconds.rounded(.up)))])
                return round
            }
        }
        return round
    }

    /// A pending event as claimed.
    struct ClaimedEvent: Sendable {
        let id: Int
        let rule: String
        let key: String
        let kind: String
        let title: String
        let text: String
        let payload: JSONValue
        let attempts: Int

        var message: SlackMessage { AlertMessage.slackMessage(rule: rule, key: key, kind: kind, title: title, text: text, payload: payload) }
    }

    private func claim() async throws -> [ClaimedEvent] {
        do {
            let rows = try await client.query(
                """
                UPDATE alert_events e
                   SET attempts = e.attempts + 1,
                       next_attempt_at = now() + make_interval(secs => \(configuration.lease.seconds))
                 WHERE e.id IN (SELECT id FROM alert_events
                                 WHERE status = 'pending' AND next_attempt_at <= now()
                                 ORDER BY next_attempt_at, id
                                 LIMIT \(configuration.batchSize)
                                   FOR UPDATE SKIP LOCKED)
                RETURNING e.id, e.rule, e.key, e.kind, e.title, e.text, e.payload::text, e.attempts
                """,
                logger: logger
            )
            var events: [ClaimedEvent] = []
            for try await (id, rule, key, kind, title, text, payload, attempts) in rows.decode((Int, String, String, String, String, String, String, Int).self) {
                events.append(ClaimedEvent(id: id, rule: rule, key: key, kind: kind, title: title, text: text, payload: JSONValue(parsing: payload) ?? [:], attempts: attempts))
            }
            return events.sorted { $0.id < $1.id }
        } catch {
            throw DatabaseError(wrapping: error, context: "claiming alert events")
        }
    }

    /// Ends an attempt, fenced by its attempt number: a claim that outlived its lease and
    /// was taken over cannot overwrite the newer attempt's outcome.
    private func finish(_ event: ClaimedEvent, status: String, error: String?) async throws {
        do {
            try await client.query(
                """
                UPDATE alert_events
                   SET status = \(status), last_error = \(error),
                       sent_at = CASE WHEN \(status) = 'sent' THEN now() END
                 WHERE id = \(event.id) AND status = 'pending' AND attempts = \(event.attempts)
                """,
                logger: logger
            )
        } catch {
            throw DatabaseError(wrapping: error, context: "recording an alert's delivery")
        }
    }

    private func postpone(_ event: ClaimedEvent, untried: [Int], by delay: Duration, error: String) async throws {
        do {
            try await client.query(
                """
                UPDATE alert_events
                   SET next_attempt_at = now() + make_interval(secs => \(delay.seconds)),
                       last_error = CASE WHEN id = \(event.id) THEN \(error) ELSE last_error END,
                       attempts = CASE WHEN id = \(event.id) THEN attempts ELSE attempts - 1 END
                 WHERE status = 'pending'
                   AND ((id = \(event.id) AND attempts = \(event.attempts)) OR id = ANY(\(untried)::bigint[]))
                """,
                logger: logger
            )
        } catch {
            throw DatabaseError(wrapping: error, context: "postponing an alert's delivery")
        }
    }

    /// With no webhook, and no live process delivering to Slack: the due events are logged and
    /// marked `disabled`, in one statement.
    private func disableDue() async throws -> Round {
        var round = Round()
        do {
            let rows = try await client.query(
                """
                UPDATE alert_events e
                   SET status = 'disabled', attempts = e.attempts + 1, last_error = 'SLACK_WEBHOOK_URL is not set'
                 WHERE e.id IN (SELECT id FROM alert_events
                                 WHERE status = 'pending' AND next_attempt_at <= now()
                                   AND NOT EXISTS (SELECT 1 FROM worker_heartbeats h
                                                    WHERE h.metadata->>'alerts' = \(Self.slack) AND fila_process_alive(h))
                                 ORDER BY next_attempt_at, id
                                 LIMIT \(configuration.batchSize)
                                   FOR UPDATE SKIP LOCKED)
                RETURNING e.id, e.rule, e.key, e.kind, e.title, e.text
                """,
                logger: logger
            )
            for try await (id, rule, key, kind, title, text) in rows.decode((Int, String, String, String, String, String).self) {
                round.disabled += 1
                outcomes("disabled").increment()
                logger.warning(
                    "alert (Slack is off): \(title)",
                    metadata: ["alert.id": .stringConvertible(id), "alert.rule": .string(rule), "alert.key": .string(key), "alert.kind": .string(kind), "alert.text": .string(text)]
                )
            }
        } catch {
            throw DatabaseError(wrapping: error, context: "recording alerts with Slack off")
        }
        return round
    }
}

extension Logger {
    fileprivate func with(_ event: AlertDeliveryService.ClaimedEvent) -> Logger {
        var copy = self
        copy[metadataKey: "alert.id"] = .stringConvertible(event.id)
        copy[metadataKey: "alert.rule"] = .string(event.rule)
        copy[metadataKey: "alert.kind"] = .string(event.kind)
        copy[metadataKey: "alert.attempt"] = .stringConvertible(event.attempts)
        return copy
    }
}
