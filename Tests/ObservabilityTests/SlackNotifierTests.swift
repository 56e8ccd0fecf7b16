import FilaTestSupport
import Foundation
import Logging
import Observability
import Primitives
import Testing

private let logger = TestDatabase.logger

/// The notifier against a fake Slack speaking CONTRACTS.md §3.
@Suite("Slack notifier", .timeLimit(.minutes(3)))
struct SlackNotifierTests {
    private func withNotifier(_ body: (FakeSlack, SlackNotifier) async throws -> Void) async throws {
        let slack = try await FakeSlack.start()
        let url = try #require(SecretURL(slack.webhookURL))
        let notifier = SlackNotifier(url: url, timeout: .seconds(30))
        do {
            try await body(slack, notifier)
        } catch {
            try? await notifier.shutdown()
            await slack.shutdown()
            throw error
        }
        try await notifier.shutdown()
        await slack.shutdown()
    }

    private let message = SlackMessage(text: "Fila acumulada", blocks: [["type": "section", "text": ["type": "mrkdwn", "text": "60 mensagens"]]])

    @Test func aPostCarriesTextAndBlocksAndOkIsDelivered() async throws {
        try await withNotifier { slack, notifier in
            #expect(await notifier.post(message, logger: logger) == .delivered)
            let post = try #require(slack.posts.first)
            #expect(post.contentType?.hasPrefix("application/json") == true)
            #expect(post.text == "Fila acumulada")
            #expect(post.blocks?.text == #"[{"text":{"text":"60 mensagens","type":"mrkdwn"},"type":"section"}]"#)
        }
    }

    @Test(arguments: [
        (FakeSlack.Mode.invalidPayload, 400, "invalid_payload"),
        (FakeSlack.Mode.invalidToken, 403, "invalid_token"),
        (FakeSlack.Mode.noService, 404, "no_service"),
        (FakeSlack.Mode.status(410, "channel_is_archived"), 410, "channel_is_archived"),
    ])
    func configurationErrorsAreRejectedWithSlacksReason(mode: FakeSlack.Mode, status: Int, reason: String) async throws {
        try await withNotifier { slack, notifier in
            slack.mode = mode
            #expect(await notifier.post(message, logger: logger) == .rejected(status: status, reason: "HTTP \(status) \(reason)"))
            #expect(slack.posts.count == 1)
        }
    }

    @Test func rateLimitingIsRetriedAfterSlacksRetryAfter() async throws {
        try await withNotifier { slack, notifier in
            slack.mode = .rateLimited(retryAfter: 7)
            #expect(await notifier.post(message, logger: logger) == .retryLater(after: .seconds(7), reason: "HTTP 429 rate_limited"))
        }
    }

    @Test func slacksOwnFailureIsRetried() async throws {
        try await withNotifier { slack, notifier in
            slack.mode = .serverError
            #expect(await notifier.post(message, logger: logger) == .retryLater(after: nil, reason: "HTTP 500 rollup_error"))
        }
    }

    @Test func anOutageIsRetriedAndTheReasonNeverCarriesTheWebhookPath() async throws {
        try await withNotifier { slack, notifier in
            await slack.startOutage()
            guard case .retryLater(nil, let reason) = await notifier.post(message, logger: logger) else {
                Issue.record("an unreachable Slack must be retried")
                return
            }
            #expect(!reason.contains(slack.path))
            #expect(!reason.contains("B0TEST"))
            #expect(slack.posts.isEmpty)
            try await slack.endOutage()
            #expect(await notifier.post(message, logger: logger) == .delivered)
        }
    }

    @Test func aMessageWithoutTextIsWhatSlackCallsNoText() async throws {
        try await withNotifier { slack, notifier in
            #expect(await notifier.post(SlackMessage(text: ""), logger: logger) == .rejected(status: 400, reason: "HTTP 400 no_text"))
        }
    }

    @Test func theWebhookURLIsRedactedWhereverItIsPrinted() throws {
        let url = try #require(SecretURL("https://hooks.slack.com/services/T000/B000/SECRETSECRET"))
        #expect("\(url)" == "https://hooks.slack.com/…")
        #expect(String(reflecting: url) == "https://hooks.slack.com/…")
        #expect(!"\([url])".contains("SECRET"))
        #expect(SecretURL("hooks.slack.com/services/x") == nil)
        #expect(SecretURL("https://hooks.slack.com") == nil)
    }
}
