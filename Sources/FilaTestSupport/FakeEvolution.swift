import Database
import Foundation
import Primitives
import Synchronization

/// A fake Evolution API v2 on 127.0.0.1 that follows CONTRACTS.md §1: the same routes, guard
/// order (unknown instance 404 before the apikey's 401), status codes and bodies.
///
/// Knobs can change while it runs: `mode`, `latency`, `numbersNotOnWhatsApp`. It records every
/// request it routed and every text it accepted.
///
/// ```swift
/// let evolution = try await FakeEvolution.start()
/// evolution.numbersNotOnWhatsApp = ["5511900000000"]
/// // … point an EvolutionProvider at evolution.baseURL, evolution.apiKey, evolution.instance …
/// #expect(evolution.sentTexts.map(\.text) == ["Olá"])
/// await evolution.shutdown()
/// ```
public final class FakeEvolution: Sendable {
    public enum Mode: Sendable, Hashable {
        /// Sends succeed (201).
        case accept
        /// Sends fail as with a dropped WhatsApp socket: 500 "Connection Closed"; the
        /// connection state reads "close".
        case connectionClosed
        /// Sends that pass the instance and apikey guards get this answer.
        case status(Int, body: String)
        /// Every request is met by closing its connection, without an answer.
        case outage
    }

    /// A request the fake routed.
    public struct RecordedRequest: Sendable, HasHeaders {
        public let method: String
        public let path: String
        public let headers: [(name: String, value: String)]
        /// The raw body.
        public let body: String
        /// The body's `number` when it is a JSON string.
        public let number: String?
        /// The body's `text` when it is a JSON string.
        public let text: String?
        /// When it arrived.
        public let receivedAt: ContinuousClock.Instant
    }

    /// A text the fake accepted (answered 201).
    public struct SentText: Sendable, Hashable {
        /// `number` as sent.
        public let number: String
        public let text: String
        /// The `key.id` it answered.
        public let messageID: String
    }

    public let apiKey: String
    public let instance: String
    private let server: FakeHTTPServer
    private let behaviour: Behaviour

    private init(apiKey: String, instance: String, server: FakeHTTPServer, behaviour: Behaviour) {
        self.apiKey = apiKey
        self.instance = instance
        self.server = server
        self.behaviour = behaviour
    }

    public static func start(apiKey: String = "fake-evolution-key", instance: String = "fila-test") async throws -> FakeEvolution {
        let behaviour = Behaviour(apiKey: apiKey, instance: instance)
        let server = try await FakeHTTPServer.start { request in await behaviour.respond(to: request) }
        return FakeEvolution(apiKey: apiKey, instance: instance, server: server, behaviour: behaviour)
    }

    /// `http://127.0.0.1:<port>`.
    public var baseURL: String { server.baseURL }

    /// What a `fila worker --sender whatsapp` needs to send through this fake.
    public var workerEnvironment: [String: String] {
        ["FILA_SENDER": "whatsapp", "EVOLUTION_URL": baseURL, "EVOLUTION_API_KEY": apiKey, "EVOLUTION_INSTANCE": instance]
    }

    public var mode: Mode {
        get { behaviour.state.withLock { $0.mode } }
        set {
            behaviour.state.withLock { $0.mode = newValue }
            server.outage = newValue == .outage
        }
    }

    /// How long every answer is held back.
    public var latency: Duration {
        get { behaviour.state.withLock { $0.latency } }
        set { behaviour.state.withLock { $0.latency = newValue } }
    }

    /// What `GET /instance/connectionState` answers as `state` (`open`, `connecting`, `close`,
    /// `refused`); `""` omits the key, as Evolution does for an instance not in memory; nil
    /// follows `mode` (`close` for `.connectionClosed`, else `open`).
    public var connectionState: String? {
        get { behaviour.state.withLock { $0.connectionState } }
        set { behaviour.state.withLock { $0.connectionState = newValue } }
    }

    /// Numbers (as sent, or their digits) answered with the 400 `exists:false` body.
    public var numbersNotOnWhatsApp: Set<String> {
        get { behaviour.state.withLock { $0.numbersNotOnWhatsApp } }
        set { behaviour.state.withLock { $0.numbersNotOnWhatsApp = newValue } }
    }

    /// Every request routed, oldest first.
    public var requests: [RecordedRequest] { behaviour.state.withLock { $0.requests } }

    /// POST sendText requests received, whatever their answer.
    public var sendAttempts: Int { behaviour.state.withLock { $0.sendAttempts } }

    /// Texts accepted, oldest first.
    public var sentTexts: [SentText] { behaviour.state.withLock { $0.sentTexts } }

    /// Forgets the records; the knobs stay.
    public func reset() {
        behaviour.state.withLock { state in
            state.requests = []
            state.sendAttempts = 0
            state.sentTexts = []
        }
    }

    public func shutdown() async {
        await server.shutdown()
    }

    fileprivate struct State {
        var mode: Mode = .accept
        var latency: Duration = .zero
        var numbersNotOnWhatsApp: Set<String> = []
        var connectionState: String?
        var requests: [RecordedRequest] = []
        var sendAttempts = 0
        var sentTexts: [SentText] = []
    }

    /// The routes; shared by the server's handler and the fake's knobs.
    fileprivate final class Behaviour: Sendable {
        let apiKey: String
        let instance: String
        /// A cuid-like `instanceId`, as Evolution puts in send answers.
        let instanceID = "c" + randomCharacters(24, from: "abcdefghijklmnopqrstuvwxyz0123456789")
        let state = Mutex(State())

        init(apiKey: String, instance: String) {
            self.apiKey = apiKey
            self.instance = instance
        }

        func respond(to request: FakeRequest) async -> FakeResponse {
            let segments = request.path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
            let isSendText = request.method == "POST" && segments.count == 3 && segments[0] == "message" && segments[1] == "sendText"
            let fields = JSONValue(parsing: request.bodyText)
            var number: String?
            var text: String?
            if case .string(let value)? = fields?["number"] { number = value }
            if case .string(let value)? = fields?["text"] { text = value }
            let recorded = RecordedRequest(
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: request.bodyText,
                number: isSendText ? number : nil,
                text: isSendText ? text : nil,
                receivedAt: .now
            )
            let latency = state.withLock { state -> Duration in
                state.requests.append(recorded)
                if isSendText { state.sendAttempts += 1 }
                return state.latency
            }
            if latency > .zero { try? await Task.sleep(for: latency) }
            let mode = state.withLock { $0.mode }
            return route(request, segments: segments, mode: mode)
        }

        private func route(_ request: FakeRequest, segments: [String], mode: Mode) -> FakeResponse {
            guard segments.count == 3 else { return Self.routeNotFound(request) }
            switch (request.method, segments[0], segments[1]) {
            case ("POST", "message", "sendText"), ("GET", "instance", "connectionState"):
                break
            default:
                return Self.routeNotFound(request)
            }
            // Guard order as in index.router.ts: the instance exists, then the apikey.
            guard segments[2] == instance else {
                return Self.envelope(404, "Not Found", message: "[" + jsonQuoted("The \"\(segments[2])\" instance does not exist") + "]")
            }
            guard request.header("apikey") == apiKey else {
                return Self.envelope(401, "Unauthorized", message: jsonQuoted("Unauthorized"))
            }
            if segments[0] == "instance" {
                let connection = state.withLock { $0.connectionState } ?? (mode == .connectionClosed ? "close" : "open")
                if connection.isEmpty {
                    return .json(200, #"{"instance":{"instanceName":"# + jsonQuoted(instance) + "}}")
                }
                return .json(200, #"{"instance":{"instanceName":"# + jsonQuoted(instance) + #","state":"# + jsonQuoted(connection) + "}}")
            }
            return sendText(request, mode: mode)
        }

        private func sendText(_ request: FakeRequest, mode: Mode) -> FakeResponse {
            if case .status(let status, let body) = mode { return .json(status, body) }

            // textMessageSchema: every schema error, one array passed as one argument.
            guard case .object(let fields)? = JSONValue(parsing: request.bodyText) else {
                // Not contractual: Express's JSON parser rejects the body before any route.
                return Self.envelope(400, "Bad Request", message: "[" + jsonQuoted("Unexpected body: not a JSON object") + "]")
            }
            var problems: [String] = []
            switch fields["number"] {
            case .none: problems.append(#"instance requires property "number""#)
            case .some(.string): break
            case .some: problems.append("Invalid format")
            }
            switch fields["text"] {
            case .none: problems.append(#"instance requires property "text""#)
            case .some(.string): break
            case .some: problems.append("instance.text is not of a type(s) string")
            }
            guard problems.isEmpty, case .string(let number)? = fields["number"], case .string(let text)? = fields["text"] else {
                return Self.envelope(400, "Bad Request", message: "[[" + problems.map(jsonQuoted).joined(separator: ",") + "]]")
            }
            guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                return Self.envelope(400, "Bad Request", message: "[" + jsonQuoted("Text is required") + "]")
            }

            if mode == .connectionClosed {
                return Self.envelope(500, "Internal Server Error", message: jsonQuoted("Connection Closed"))
            }
            let digits = number.filter { $0.isASCII && $0.isNumber }
            let jid = digits + "@s.whatsapp.net"
            let notOnWhatsApp = state.withLock { $0.numbersNotOnWhatsApp }
            if notOnWhatsApp.contains(number) || notOnWhatsApp.contains(digits) {
                let lookup = #"{"jid":"# + jsonQuoted(jid) + #","exists":false,"number":"# + jsonQuoted(number) + "}"
                return Self.envelope(400, "Bad Request", message: "[" + lookup + "]")
            }

            let messageID = "3EB0" + randomCharacters(16, from: "0123456789ABCDEF")
            state.withLock { $0.sentTexts.append(SentText(number: number, text: text, messageID: messageID)) }
            let timestamp = Int(Date().timeIntervalSince1970)
            var body = #"{"key":{"remoteJid":"# + jsonQuoted(jid) + #","fromMe":true,"id":"# + jsonQuoted(messageID) + "},"
            body += #""pushName":"","status":"PENDING","message":{"conversation":"# + jsonQuoted(text) + "},"
            body += #""contextInfo":null,"messageType":"conversation","messageTimestamp":\#(timestamp),"#
            body += #""instanceId":"# + jsonQuoted(instanceID) + #","source":"unknown"}"#
            return .json(201, body)
        }

        /// `{"status":…,"error":…,"response":{"message":…}}`, the global error handler's shape.
        private static func envelope(_ status: Int, _ error: String, message: String) -> FakeResponse {
            .json(status, #"{"status":\#(status),"error":"# + jsonQuoted(error) + #","response":{"message":"# + message + "}}")
        }

        /// Not contractual: Express's default answer to a route it does not know.
        private static func routeNotFound(_ request: FakeRequest) -> FakeResponse {
            FakeResponse(status: 404, contentType: "text/html; charset=utf-8", body: "Cannot \(request.method) \(request.path)")
        }
    }
}
