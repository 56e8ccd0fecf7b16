import Database
import FilaTestSupport
import Foundation
import Logging
import Observability
import PostgresNIO
import Primitives
import Testing

private let logger = TestDatabase.logger

/// The outbox: queued alerts go to the fake Slack, wait out its failures in the table, and
/// are sent exactly once.
@Suite("Alert delivery", .migratedDatabase, .timeLimit(.minutes(2)))
struct AlertDeliveryTests {
    private let configuration = AlertDeliveryService.Configuration(spacing: .zero)

    /// Queues one firing notification per key (one evaluation finding them all).
    private func queueAlerts(_ client: PostgresClient, keys: [String] = [""]) async throws {
        let alerts = keys.map { key in
            Alert(rule: "worker_sem_heartbeat", key: key, title: "Nenhum worker vivo", text: "Nada está sendo enviado", fields: [.init("Mensagens vencidas", "3")])
        }
        try await AlertStore(client: client).report(rule: "worker_sem_heartbeat", firing: alerts, cooldown: .seconds(3600), logger: logger)
    }

    private func rows(_ client: PostgresClient) async throws -> [String] {
        var result: [String] = []
        let query = "SELECT status, attempts, coalesce(last_error, ''), sent_at IS NOT NULL FROM alert_events ORDER BY id"
        for try await (status, attempts, error, sent) in try await client.query(PostgresQuery(unsafeSQL: query), logger: logger).decode((String, Int, String, Bool).self) {
            result.append("\(status) \(attempts) \(error) \(sent)")
        }
        return result
    }

    /// Runs `body` with a fake Slack and a delivery service pointed at it.
    private func withDelivery(metrics: PrometheusMetrics? = nil, _ body: (PostgresClient, FakeSlack, AlertDeliveryService) async throws -> Void) async throws {
        let client = try TestDatabase.current.client
        let slack = try await FakeSlack.start()
        let url = try #require(SecretURL(slack.webhookURL))
        let notifier = SlackNotifier(url: url, timeout: .seconds(30))
        let metrics = metrics ?? PrometheusMetrics(descriptors: [AlertDeliveryService.slackAlerts])
        let service = AlertDeliveryService(client: client, notifier: notifier, configuration: configuration, metricsFactory: metrics.factory, logger: logger)
        do {
            try await body(client, slack, service)
        } catch {
            try? await notifier.shutdown()
            await slack.shutdown()
            throw error
        }
        try await notifier.shutdown()
        await slack.shutdown()
    }

    @Test func aQueuedAlertIsPostedOnceWithItsRuleNamed() async throws {
        let metrics = PrometheusMetrics(descriptors: [AlertDeliveryService.slackAlerts])
        try await withDelivery(metrics: metrics) { client, slack, service in
            try await queueAlerts(client)
            #expect(try await service.deliverDue().sent == 1)
            #expect(try await service.deliverDue().sent == 0)
            #expect(slack.messages.count == 1)
            #expect(slack.messages.first?.contains("worker_sem_heartbeat") == true)
            #expect(slack.messages.first?.contains("Mensagens vencidas: 3") == true)
            #expect(try await rows(client) == ["sent 1  true"])
            #expect(service.status == .delivering)
            let exposition = await metrics.exposition(logger: logger)
            #expect(exposition.contains("# TYPE wa_slack_alerts_sent_total counter\nwa_slack_alerts_sent_total{outcome=\"sent\"} 1\n"))
        }
    }

    @Test func anOutageThenRecoveryDeliversLateAndExactlyOnce() async throws {
        let metrics = PrometheusMetrics(descriptors: [AlertDeliveryService.slackAlerts])
        try await withDelivery(metrics: metrics) { client, slack, service in
            await slack.startOutage()
            try await queueAlerts(client, keys: ["a", "b"])
            let down = try await service.deliverDue()
            #expect(down.sent == 0 && down.retrying == 2)
            // One post was tried and is retried later; the other was not tried.
            #expect(await metrics.exposition(logger: logger).contains(#"wa_slack_alerts_sent_total{outcome="retrying"} 1"#))
            // Both wait; only the first was tried, so only it counts an attempt.
            let waiting = try await rows(client)
            #expect(waiting.count == 2)
            #expect(waiting[0].hasPrefix("pending 1 cannot reach Slack"))
            #expect(waiting[1] == "pending 0  false")
            #expect(try await service.deliverDue().sent == 0, "the backoff holds them")
            guard case .retrying = service.status else {
                Issue.record("status \(service.status)")
                return
            }

            try await slack.endOutage()
            // The backoff passes (written into the rows).
            try await client.query("UPDATE alert_events SET next_attempt_at = now() - interval '1 second'", logger: logger)
            #expect(try await service.deliverDue().sent == 2)
            #expect(try await service.deliverDue().sent == 0)
            #expect(slack.messages.count == 2)
            #expect(try await rows(client).map { $0.hasPrefix("sent") && $0.hasSuffix("true") } == [true, true])
        }
    }

    @Test func rateLimitingPostponesByRetryAfterAndAServerErrorIsRetried() async throws {
        try await withDelivery { client, slack, service in
            slack.mode = .rateLimited(retryAfter: 42)
            try await queueAlerts(client)
            #expect(try await service.deliverDue().retrying == 1)
            let wait = try await client.query(
                "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM alert_events", logger: logger
            ).collect().first?.decode(Double.self)
            // Retry-After's 42 s, not the 8-12 s backoff, less what a loaded machine takes
            // between the postponing statement and this read.
            #expect(wait.map { (30...43).contains($0) } == true, "\(String(describing: wait))")

            slack.mode = .serverError
            try await client.query("UPDATE alert_events SET next_attempt_at = now()", logger: logger)
            #expect(try await service.deliverDue().retrying == 1)
            #expect(try await rows(client) == ["pending 2 HTTP 500 rollup_error false"])

            slack.mode = .accept
            try await client.query("UPDATE alert_events SET next_attempt_at = now()", logger: logger)
            #expect(try await service.deliverDue().sent == 1)
            #expect(slack.posts.map(\.status) == [429, 500, 200])
        }
    }

    @Test(arguments: [FakeSlack.Mode.invalidToken, .noService, .invalidPayload])
    func aConfigurationErrorFailsTheEventForGoodAndShowsInStatus(mode: FakeSlack.Mode) async throws {
        try await withDelivery { client, slack, service in
            slack.mode = mode
            try await queueAlerts(client)
            #expect(try await service.deliverDue().failed == 1)
            try await client.query("UPDATE alert_events SET next_attempt_at = now() - interval '1 hour'", logger: logger)
            #expect(try await service.deliverDue().failed == 0)
            #expect(slack.posts.count == 1)
            let row = try #require(try await rows(client).first)
            #expect(row.hasPrefix("failed 1 HTTP 4"))
            guard case .misconfigured(let reason) = service.status else {
                Issue.record("status \(service.status)")
                return
            }
            #expect(!reason.contains(slack.path))
            let view = try await client.query("SELECT last_delivery FROM ops.alertas", logger: logger).collect().first?.decode(String.self)
            #expect(view == "failed")
        }
    }

    @Test func twoReplicasDeliveringAtOnceSendEachAlertOnce() async throws {
        try await withDelivery { client, slack, _ in
            try await queueAlerts(client, keys: (1...15).map { "k\($0)" })
            let url = try TestDatabase.current.url
            let small = AlertDeliveryService.Configuration(batchSize: 4, spacing: .zero)
            try await TestDatabase.withClient(url) { other in
                let notifiers = [SlackNotifier(url: try #require(SecretURL(slack.webhookURL))), SlackNotifier(url: try #require(SecretURL(slack.webhookURL)))]
                async let a = drain(AlertDeliveryService(client: client, notifier: notifiers[0], configuration: small, logger: logger))
                async let b = drain(AlertDeliveryService(client: other, notifier: notifiers[1], configuration: small, logger: logger))
                let (sentA, sentB) = try await (a, b)
                for notifier in notifiers { try await notifier.shutdown() }
                #expect(sentA + sentB == 15)
            }
            #expect(slack.messages.count == 15)
            #expect(Set(slack.posts.map(\.body)).count == 15)
        }
    }

    private func drain(_ service: AlertDeliveryService) async throws -> Int {
        var total = 0
        while true {
            let round = try await service.deliverDue()
            total += round.sent
            if round.sent == 0 { return total }
        }
    }

    @Test func withoutAWebhookAlertsAreLoggedAndMarkedDisabled() async throws {
        let client = try TestDatabase.current.client
        let service = AlertDeliveryService(client: client, notifier: nil, configuration: configuration, logger: logger)
        #expect(service.status == .off)
        try await queueAlerts(client)
        #expect(try await service.deliverDue().disabled == 1)
        #expect(try await service.deliverDue().disabled == 0)
        #expect(try await rows(client) == ["disabled 1 SLACK_WEBHOOK_URL is not set false"])
    }

    /// A process without a webhook leaves the alerts to one that has one while it lives, and
    /// logs and disables them only when no live process delivers to Slack.
    @Test func aProcessWithoutAWebhookLeavesAlertsToOneThatHasOne() async throws {
        try await withDelivery { client, slack, withWebhook in
            let without = AlertDeliveryService(client: client, notifier: nil, configuration: configuration, logger: logger)
            #expect(withWebhook.announcement == ["alerts": "slack"])
            #expect(without.announcement == ["alerts": "off"])
            let metadata = JSONValue.object(withWebhook.announcement).text
            try await client.query(
                "INSERT INTO worker_heartbeats (id, kind, host, pid, version, metadata) VALUES ('s-1', 'scheduler', 't', 1, 't', \(metadata)::jsonb)",
                logger: logger
            )
            try await queueAlerts(client)
            #expect(try await without.deliverDue().disabled == 0)
            #expect(try await withWebhook.deliverDue().sent == 1)
            #expect(slack.messages.count == 1)

            // The process with the webhook died: the next alert is logged and disabled.
            try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() - interval '1 hour'", logger: logger)
            try await queueAlerts(client, keys: ["", "outro"])
            #expect(try await without.deliverDue().disabled == 1)
            #expect(try await rows(client) == ["sent 1  true", "disabled 1 SLACK_WEBHOOK_URL is not set false"])
        }
    }
}
