import Database
import Foundation
import Primitives
import Synchronization

/// A fake Z-API on 127.0.0.1 that follows CONTRACTS.md §2: `send-text` and `status` under
/// `/instances/{id}/token/{token}/`, the `Client-Token` header, 405 and 415.
///
/// Knobs can change while it runs: `mode`, `latency`. It records every request it routed
/// and every text it accepted.
///
/// ```swift
/// let zapi = try await FakeZAPI.start()
/// zapi.mode = .valueFalse
/// // … point a ZAPIProvider at zapi.baseURL, zapi.instanceID, zapi.token, zapi.clientToken …
/// await zapi.shutdown()
/// ```
public final class FakeZAPI: Sendable {
    public enum Mode: Sendable, Hashable {
        /// Sends succeed: 200 with `zaapId`, `messageId` and `id`.
        case accept
        /// Sends that pass the path, method and Client-Token checks get this answer.
        case status(Int, body: String)
        /// Sends answer 200 `{"value":false}`, as failed operations are reported to do.
        case valueFalse
        /// Every request is met by closing its connection, without an answer.
        case outage
    }

    /// A request the fake routed.
    public struct RecordedRequest: Sendable, HasHeaders {
        public let method: String
        /// Includes the instance token.
        public let path: String
        public let headers: [(name: String, value: String)]
        /// The raw body.
        public let body: String
        /// The body's `phone` when it is a JSON string.
        public let phone: String?
        /// The body's `message` when it is a JSON string.
        public let message: String?
    }

    /// A text the fake accepted (answered 200 with ids).
    public struct SentText: Sendable, Hashable {
        public let phone: String
        public let message: String
        /// The `messageId` (and `id`) it answered.
        public let messageID: String
        public let zaapID: String
    }

    public let instanceID: String
    public let token: String
    public let clientToken: String
    private let server: FakeHTTPServer
    private let behaviour: Behaviour

    private init(instanceID: String, token: String, clientToken: String, server: FakeHTTPServer, behaviour: Behaviour) {
        self.instanceID = instanceID
        self.token = token
        self.clientToken = clientToken
        self.server = server
        self.behaviour = behaviour
    }

    public static func start(
        instanceID: String = "fake-instance",
        token: String = "fake-token",
        clientToken: String = "fake-client-token"
    ) async throws -> FakeZAPI {
        let behaviour = Behaviour(instanceID: instanceID, token: token, clientToken: clientToken)
        let server = try await FakeHTTPServer.start { request in await behaviour.respond(to: request) }
        return FakeZAPI(instanceID: instanceID, token: token, clientToken: clientToken, server: server, behaviour: behaviour)
    }

    /// `http://127.0.0.1:<port>`.
    public var baseURL: String { server.baseURL }

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

    /// What `status` answers: `connected` and `smartphoneConnected`; nil follows `mode`
    /// (connected only in `.accept`).
    public var statusConnected: (connected: Bool, smartphoneConnected: Bool)? {
        get { behaviour.state.withLock { $0.statusConnected } }
        set { behaviour.state.withLock { $0.statusConnected = newValue } }
    }

    /// Every request routed, oldest first.
    public var requests: [RecordedRequest] { behaviour.state.withLock { $0.requests } }

    /// POST send-text requests received, whatever their answer.
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
        var statusConnected: (connected: Bool, smartphoneConnected: Bool)?
        var requests: [RecordedRequest] = []
        var sendAttempts = 0
        var sentTexts: [SentText] = []
    }

    /// The routes; shared by the server's handler and the fake's knobs.
    fileprivate final class Behaviour: Sendable {
        let instanceID: String
        let token: String
        let clientToken: String
        let state = Mutex(State())

        init(instanceID: String, token: String, clientToken: String) {
            self.instanceID = instanceID
            self.token = token
            self.clientToken = clientToken
        }

        func respond(to request: FakeRequest) async -> FakeResponse {
            // instances/{id}/token/{token}/{action}
            let segments = request.path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
            let isSendText = request.method == "POST" && segments.count == 5 && segments[4] == "send-text"
            let fields = JSONValue(parsing: request.bodyText)
            var phone: String?
            var message: String?
            if case .string(let value)? = fields?["phone"] { phone = value }
            if case .string(let value)? = fields?["message"] { message = value }
            let recorded = RecordedRequest(
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: request.bodyText,
                phone: isSendText ? phone : nil,
                message: isSendText ? message : nil
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
            // Not contractual: Z-API documents no body for an unknown path, instance or token.
            guard segments.count == 5, segments[0] == "instances", segments[2] == "token" else {
                return .json(404, #"{"error":"Not Found"}"#)
            }
            guard segments[1] == instanceID, segments[3] == token else {
                return .json(404, #"{"error":"Instance not found"}"#)
            }
            let action = segments[4]
            let method: String
            switch action {
            case "send-text": method = "POST"
            case "status": method = "GET"
            default: return .json(404, #"{"error":"Not Found"}"#)  // not contractual either
            }
            guard request.method == method else {
                return .json(405, #"{"error":"Method Not Allowed"}"#)  // the status is documented, the body is not
            }
            // Field reports: 400 when the header is missing, 403 when it is wrong.
            guard let given = request.header("Client-Token"), !given.isEmpty else {
                return .json(400, #"{"error":"your client-token is not configured"}"#)
            }
            guard given == clientToken else {
                return .json(403, #"{"error":"Client-Token "# + Self.jsonEscaped(given) + #" not allowed"}"#)
            }
            if action == "status" {
                // Health comes from here: only `accept` counts as connected.
                let status = state.withLock { $0.statusConnected } ?? (mode == .accept ? (connected: true, smartphoneConnected: true) : (connected: false, smartphoneConnected: false))
                let message = status.connected ? "You are already connected." : "You are not connected."
                return .json(200, #"{"connected":\#(status.connected),"error":"\#(message)","smartphoneConnected":\#(status.smartphoneConnected)}"#)
            }
            guard request.header("Content-Type")?.lowercased().hasPrefix("application/json") == true else {
                return .json(415, #"{"error":"Unsupported Media Type"}"#)  // the status is documented, the body is not
            }
            return sendText(request, mode: mode)
        }

        private func sendText(_ request: FakeRequest, mode: Mode) -> FakeResponse {
            switch mode {
            case .status(let status, let body): return .json(status, body)
            case .valueFalse: return .json(200, #"{"value":false}"#)
            case .accept, .outage: break
            }
            guard case .object(let fields)? = JSONValue(parsing: request.bodyText),
                case .string(let phone)? = fields["phone"], !phone.isEmpty,
                case .string(let message)? = fields["message"]
            else {
                // Not contractual: Z-API documents no body for a malformed send.
                return .json(400, #"{"error":"phone and message are required"}"#)
            }
            let messageID = randomCharacters(20, from: "0123456789ABCDEF")
            let zaapID = randomCharacters(32, from: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            state.withLock { $0.sentTexts.append(SentText(phone: phone, message: message, messageID: messageID, zaapID: zaapID)) }
            return .json(200, #"{"zaapId":"\#(zaapID)","messageId":"\#(messageID)","id":"\#(messageID)"}"#)
        }

        /// `text` escaped for use inside a JSON string.
        private static func jsonEscaped(_ text: String) -> String {
            String(jsonQuoted(text).dropFirst().dropLast())
        }
    }
}
