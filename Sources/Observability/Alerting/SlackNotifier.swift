#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Primitives
import Synchronization

/// Posts messages to a Slack incoming webhook as CONTRACTS.md §3 describes: JSON with
/// `text` always (the notification fallback) plus Block Kit blocks; success is 200 with the
/// body `ok`; 5xx, 429 (with its `Retry-After`) and network failures are worth retrying;
/// any other answer is a configuration error that retrying will not fix.
///
/// It never retries by itself: `AlertDeliveryService` keeps undelivered notifications in
/// `alert_events` and tries again on a later tick, so a Slack outage holds nothing up. The
/// webhook URL never appears in a result or a log line.
///
/// ```swift
/// let notifier = SlackNotifier(url: url)
/// let result = await notifier.post(SlackMessage(text: "Fila acumulada"), logger: logger)
/// try await notifier.shutdown()
/// ```
public final class SlackNotifier: Sendable {
    /// How one post ended.
    public enum Delivery: Sendable, Hashable {
        /// 200 `ok`.
        case delivered
        /// Slack is down, overloaded or unreachable: try again after `after` (Slack's
        /// `Retry-After`) or a backoff of the caller's choosing.
        case retryLater(after: Duration?, reason: String)
        /// Slack refused the post for a reason retrying cannot fix (bad or revoked URL,
        /// invalid payload): `status` is the HTTP status, `reason` Slack's error string.
        case rejected(status: Int, reason: String)
    }

    public let url: SecretURL
    public let timeout: Duration
    /// Made at the first post, so a notifier built for a process that never posts (or a
    /// command that only assembles one) holds no connections and needs no shutdown.
    private let httpClient = Mutex<HTTPClient?>(nil)

    /// - Parameters:
    ///   - timeout: how long one post may take, connection included.
    public init(url: SecretURL, timeout: Duration = .seconds(10)) {
        self.url = url
        self.timeout = timeout
    }

    /// Closes the HTTP client if one was made; call once, after the last post.
    public func shutdown() async throws {
        let client = httpClient.withLock { client -> HTTPClient? in
            defer { client = nil }
            return client
        }
        try await client?.shutdown()
    }

    private func client() -> HTTPClient {
        httpClient.withLock { client in
            if let client { return client }
            var configuration = HTTPClient.Configuration()
            // A refused connection is an answer (Slack unreachable): the next tick retries,
            // not a background loop inside this post.
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout.connect = TimeAmount(min(timeout, .seconds(5)))
            // A redirect would carry the message somewhere the URL's owner did not choose.
            configuration.redirectConfiguration = .disallow
            let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            client = made
            return made
        }
    }

    public func post(_ message: SlackMessage, logger: Logger) async -> Delivery {
        var request = HTTPClientRequest(url: url.value)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        request.body = .bytes(ByteBuffer(string: message.json))
        do {
            let response = try await client().execute(request, timeout: TimeAmount(timeout))
            let body = try await response.body.collect(upTo: 64 * 1024)
            let text = trimmed(String(buffer: body))
            return Self.classify(status: Int(response.status.code), body: text, retryAfter: response.headers.first(name: "Retry-After"))
        } catch {
            return .retryLater(after: nil, reason: url.redacting("cannot reach Slack: \(Self.describe(error))"))
        }
    }

    /// What an answer means, by CONTRACTS.md §3.
    static func classify(status: Int, body: String, retryAfter: String?) -> Delivery {
        let reason = body.isEmpty ? "HTTP \(status)" : "HTTP \(status) \(body.prefix(200))"
        switch status {
        case 200:
            // Anything but `ok` is an error even with 200 (as Alertmanager's checkTextResponseError
            // does); the post may have been shown, so it is not repeated.
            return body == "ok" ? .delivered : .rejected(status: status, reason: reason)
        case 429:
            let seconds = retryAfter.flatMap { Int(trimmed($0)) }.map { min(max($0, 1), 3600) }
            return .retryLater(after: seconds.map { .seconds($0) }, reason: reason)
        case 408, 500...599:
            return .retryLater(after: nil, reason: reason)
        default:
            return .rejected(status: status, reason: reason)
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return String(describing: error) }
        return String(describing: type(of: error)) + ": " + String(describing: error)
    }
}

/// A message for an incoming webhook: `text` (shown in notifications and by clients that
/// cannot render blocks) and optional Block Kit `blocks`.
public struct SlackMessage: Sendable, Hashable {
    public var text: String
    public var blocks: [JSONValue]

    public init(text: String, blocks: [JSONValue] = []) {
        self.text = text
        self.blocks = blocks
    }

    /// The request body.
    public var json: String {
        var body: [String: JSONValue] = ["text": .string(text)]
        if !blocks.isEmpty { body["blocks"] = .array(blocks) }
        return JSONValue.object(body).text
    }
}

/// `text` without leading and trailing spaces and line breaks.
func trimmed(_ text: String) -> String {
    let isSpace = { (c: Character) in c == " " || c == "\n" || c == "\r" || c == "\t" }
    return String(text.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
}
