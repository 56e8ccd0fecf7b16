import AsyncHTTPClient
import Logging
import NIOHTTP1
import Primitives

/// Sends through a self-hosted Evolution API v2 instance (CONTRACTS.md §1).
///
/// ```swift
/// let evolution = EvolutionProvider(
///     configuration: .init(baseURL: "http://evolution:8080", apiKey: key, instance: "clinica"),
///     httpClient: httpClient
/// )
/// let receipt = try await evolution.sendText(to: "5511999999999", text: "Olá", logger: logger)
/// ```
public struct EvolutionProvider: WhatsAppProvider {
    public struct Configuration: Sendable {
        /// Where the API listens, e.g. `http://127.0.0.1:8080`; a trailing slash is tolerated.
        public var baseURL: String
        /// Sent as the `apikey` header: the global key or the instance's own token.
        public var apiKey: String
        /// The instance name, the last path segment of every call.
        public var instance: String
        /// For the whole call, body included. Evolution's `delay` holds the answer back.
        public var timeout: Duration

        public init(baseURL: String, apiKey: String, instance: String, timeout: Duration = .seconds(30)) {
            self.baseURL = baseURL
            self.apiKey = apiKey
            self.instance = instance
            self.timeout = timeout
        }
    }

    public let name = "evolution"
    public let configuration: Configuration
    private let httpClient: HTTPClient

    public init(configuration: Configuration, httpClient: HTTPClient) {
        self.configuration = configuration
        self.httpClient = httpClient
    }

    /// `POST /message/sendText/{instance}` with the v2 body `{"number","text"}`.
    public func sendText(to telefone: String, text: String, logger: Logger) async throws -> ProviderReceipt {
        let url =
            ProviderHTTP.trimmedBaseURL(configuration.baseURL) + "/message/sendText/"
            + ProviderHTTP.pathSegment(configuration.instance)
        var headers = HTTPHeaders()
        headers.add(name: "apikey", value: configuration.apiKey)
        let body: JSONValue = ["number": .string(ProviderHTTP.digits(telefone)), "text": .string(text)]
        let response = try await ProviderHTTP.postJSON(
            body.text,
            to: url,
            headers: headers,
            provider: name,
            timeout: configuration.timeout,
            secrets: [configuration.apiKey],
            httpClient: httpClient,
            logger: logger
        )
        return try receipt(from: response)
    }

    /// The receipt in a success answer, or the `ProviderError` an answer amounts to.
    func receipt(from response: ProviderHTTPResponse) throws -> ProviderReceipt {
        let json = JSONValue(parsing: response.body)
        if response.isSuccess {
            // Only `key.id` is reliable across versions; every other field is optional.
            if case .string(let id)? = json?["key"]?["id"], ProviderHTTP.isUsableID(id) {
                return ProviderReceipt(provider: name, messageID: id)
            }
            // Never the body itself: a 2xx body echoes the message text.
            let why = response.bodyTooLarge ? "a body over 1 MiB" : "no key.id"
            throw ProviderError(provider: name, kind: .invalidResponse, detail: "HTTP \(response.status) with \(why)")
        }
        // Only the exists:false shape is surely about the recipient; Evolution also re-throws
        // send failures as 400.
        if response.status == 400, let json, Self.isNumberNotOnWhatsApp(json) {
            throw ProviderError(provider: name, kind: .recipientRejected, detail: "exists:false")
        }
        throw ProviderError(provider: name, kind: .http(status: response.status), detail: errorDetail(response, json: json))
    }

    /// `{"response":{"message":[{"jid":…,"exists":false,"number":…}]}}`.
    static func isNumberNotOnWhatsApp(_ body: JSONValue) -> Bool {
        guard case .array(let items)? = body["response"]?["message"] else { return false }
        return items.contains { item in
            if case .bool(false)? = item["exists"] { return true }
            return false
        }
    }

    /// The envelope's `response.message` on one line (it may be a string, an array of strings
    /// or arrays nested in it); else `error`; else the start of the body.
    private func errorDetail(_ response: ProviderHTTPResponse, json: JSONValue?) -> String {
        if response.bodyTooLarge { return "a body over 1 MiB" }
        let text: String
        if let message = json?["response"]?["message"] {
            text = Self.flattened(message)
        } else if case .string(let error)? = json?["error"] {
            text = error
        } else {
            text = response.body
        }
        return ProviderHTTP.safeDetail(text, secrets: [configuration.apiKey])
    }

    static func flattened(_ value: JSONValue) -> String {
        switch value {
        case .string(let text):
            return text
        case .array(let items):
            return items.map { flattened($0) }.filter { !$0.isEmpty }.joined(separator: "; ")
        case .null:
            return ""
        default:
            return value.text
        }
    }
}
