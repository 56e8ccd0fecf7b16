import Foundation
import Primitives
import Synchronization

/// A fake Slack incoming webhook on 127.0.0.1 that follows CONTRACTS.md §3: a POST of JSON
/// with `text` to the webhook's path is answered 200 `ok` (text/html); a body that is not
/// JSON is 400 `invalid_payload`, one without text 400 `no_text`, another path 404
/// `no_service`. Knobs change what it answers while it runs; an outage closes the port, so
/// clients get "connection refused", and the fake comes back on the same port after it.
///
/// It records every request it answered, and every message it accepted.
///
/// ```swift
/// let slack = try await FakeSlack.start()
/// slack.mode = .rateLimited(retryAfter: 3)
/// // … point a SlackNotifier at slack.webhookURL …
/// #expect(slack.messages.count == 1)
/// await slack.shutdown()
/// ```
public final class FakeSlack: Sendable {
    public enum Mode: Sendable, Hashable {
        /// 200 `ok` for every valid post.
        case accept
        /// 429 with `Retry-After: retryAfter` (seconds).
        case rateLimited(retryAfter: Int)
        /// Any other answer to a valid post, e.g. `.status(403, "invalid_token")`.
        case status(Int, String)

        /// 400 `invalid_payload`.
        public static let invalidPayload = Mode.status(400, "invalid_payload")
        /// 403 `invalid_token`.
        public static let invalidToken = Mode.status(403, "invalid_token")
        /// 404 `no_service`: the webhook was disabled or removed.
        public static let noService = Mode.status(404, "no_service")
        /// 500 `rollup_error`, Slack's own failure.
        public static let serverError = Mode.status(500, "rollup_error")
    }

    /// A request the fake answered.
    public struct Post: Sendable, Hashable {
        public let path: String
        public let contentType: String?
        public let body: String
        /// The status it answered with.
        public let status: Int
        /// The body's `text`, when it is JSON with one.
        public let text: String?
        /// The body's `blocks`, when present.
        public let blocks: JSONValue?
    }

    /// The webhook's path (what the secret part of a real URL is).
    public var path: String { behaviour.path }
    public let port: Int
    private let behaviour: Behaviour
    private let server: Mutex<FakeHTTPServer?>

    private init(port: Int, behaviour: Behaviour, server: FakeHTTPServer) {
        self.port = port
        self.behaviour = behaviour
        self.server = Mutex(server)
    }

    public static func start() async throws -> FakeSlack {
        let path = "/services/T0FILA/B0TEST/" + randomCharacters(24, from: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let behaviour = Behaviour(path: path)
        let server = try await FakeHTTPServer.start { request in behaviour.respond(to: request) }
        return FakeSlack(port: server.port, behaviour: behaviour, server: server)
    }

    /// The webhook URL to configure: `http://127.0.0.1:<port>/services/…`.
    public var webhookURL: String { "http://127.0.0.1:\(port)\(path)" }

    public var mode: Mode {
        get { behaviour.state.withLock { $0.mode } }
        set { behaviour.state.withLock { $0.mode = newValue } }
    }

    /// Every request answered, oldest first.
    public var posts: [Post] { behaviour.state.withLock { $0.posts } }

    /// The `text` of every post answered 200 `ok`, oldest first.
    public var messages: [String] { behaviour.state.withLock { $0.posts.filter { $0.status == 200 }.compactMap(\.text) } }

    /// Stops listening: connections are refused until `endOutage()`.
    public func startOutage() async {
        let running = server.withLock { server -> FakeHTTPServer? in
            defer { server = nil }
            return server
        }
        await running?.shutdown()
    }

    /// Listens again on the same port.
    public func endOutage() async throws {
        guard server.withLock({ $0 == nil }) else { return }
        let behaviour = behaviour
        let restarted = try await FakeHTTPServer.start(port: port) { request in behaviour.respond(to: request) }
        server.withLock { $0 = restarted }
    }

    public func shutdown() async {
        await startOutage()
    }

    /// What the fake answers, shared by the server and the knobs.
    private final class Behaviour: Sendable {
        struct State {
            var mode = Mode.accept
            var posts: [Post] = []
        }

        let path: String
        let state = Mutex(State())

        init(path: String) {
            self.path = path
        }

        func respond(to request: FakeRequest) -> FakeResponse {
            let json = JSONValue(parsing: request.bodyText)
            let text = json?["text"]?.stringValue
            let contentType = request.header("Content-Type")
            let mode = state.withLock { $0.mode }
            let answer: FakeResponse
            if request.method != "POST" || request.path != path {
                answer = Self.plain(404, "no_service")
            } else if json == nil || !(contentType?.lowercased().hasPrefix("application/json") ?? false) {
                answer = Self.plain(400, "invalid_payload")
            } else if text?.isEmpty ?? true {
                answer = Self.plain(400, "no_text")
            } else {
                switch mode {
                case .accept:
                    answer = Self.plain(200, "ok")
                case .rateLimited(let seconds):
                    answer = FakeResponse(status: 429, contentType: "text/plain", body: "rate_limited", headers: [("Retry-After", String(seconds))])
                case .status(let status, let body):
                    answer = Self.plain(status, body)
                }
            }
            let post = Post(path: request.path, contentType: contentType, body: request.bodyText, status: answer.status, text: text, blocks: json?["blocks"])
            state.withLock { $0.posts.append(post) }
            return answer
        }

        private static func plain(_ status: Int, _ body: String) -> FakeResponse {
            FakeResponse(status: status, contentType: "text/html", body: body)
        }
    }
}
