import AsyncHTTPClient
import Logging
import NIOHTTP1
import Primitives

/// Sends through Z-API (CONTRACTS.md §2). The instance token is a path segment, so the URL
/// is never logged.
///
/// A 200 means queued by Z-API, not delivered: the instance's health comes from `/status`.
///
/// ```swift
/// let zapi = ZAPIProvider(
///     configuration: .init(instanceID: id, token: token, clientToken: clientToken),
///     httpClient: httpClient
/// )
/// let receipt = try await zapi.sendText(to: "5511999999999", text: "Olá", logger: logger)
/// ```
public struct ZAPIProvider: WhatsAppProvider {
    public struct Configuration: Sendable {
        /// A trailing slash is tolerated.
        public var baseURL: String
        public var instanceID: String
        /// The instance token (a path segment): a secret.
        public var token: String
        /// The account security token, sent as the `Client-Token` header: a secret.
        public var clientToken: String
        /// For the whole call, body included.
        public var timeout: Duration

        public init(
            baseURL: String = "https://api.z-api.io",
            instanceID: String,
            token: String,
            clientToken: String,
            timeout: Duration = .seconds(30)
        ) {
            self.baseURL = baseURL
            self.instanceID = instanceID
            self.token = token
            self.clientToken = clientToken
            self.timeout = timeout
        }
    }

    public let name = "zapi"
    public let configuration: Configuration
    private let httpClient: HTTPClient

    public init(configuration: Configuration, httpClient: HTTPClient) {
        self.configuration = configuration
        self.httpClient = httpClient
    }

    /// `POST /instances/{id}/token/{token}/send-text` with `{"phone","message"}`.
    public func sendText(to telefone: String, text: String, logger: Logger) async throws -> ProviderReceipt {
        let url =
            ProviderHTTP.trimmedBaseURL(configuration.baseURL) + "/instances/"
            + ProviderHTTP.pathSegment(configuration.instanceID) + "/token/"
            + ProviderHTTP.pathSegment(configuration.token) + "/send-text"
        var headers = HTTPHeaders()
        headers.add(name: "Client-Token", value: configuration.clientToken)
        let body: JSONValue = ["phone": .string(ProviderHTTP.digits(telefone)), "message": .string(text)]
        let response = try await ProviderHTTP.postJSON(
            body.text,
            to: url,
            headers: headers,
            provider: name,
            timeout: configuration.timeout,
            secrets: secrets,
            httpClient: httpClient,
            logger: logger
        )
        return try receipt(from: response)
    }

    private var secrets: [String] { [configuration.token, configuration.clientToken] }

    /// The receipt in a success answer, or the `ProviderError` an answer amounts to.
    func receipt(from response: ProviderHTTPResponse) throws -> ProviderReceipt {
        let json = JSONValue(parsing: response.body)
        guard response.isSuccess else {
            throw ProviderError(provider: name, kind: .http(status: response.status), detail: errorDetail(response, json: json))
        }
        // Failed operations may come back as 200 {"value": false}.
        if case .bool(false)? = json?["value"] {
            throw ProviderError(provider: name, kind: .invalidResponse, detail: "HTTP \(response.status) with value:false")
        }
        // `id` duplicates `messageId` "for Zapier compatibility".
        for field in ["messageId", "id"] {
            if case .string(let id)? = json?[field], ProviderHTTP.isUsableID(id) {
                return ProviderReceipt(provider: name, messageID: id)
            }
        }
        let why = response.bodyTooLarge ? "a body over 1 MiB" : "no messageId"
        throw ProviderError(provider: name, kind: .invalidResponse, detail: "HTTP \(response.status) with \(why)")
    }

    /// The body's `error` (or `message`) field, else the start of the body.
    private func errorDetail(_ response: ProviderHTTPResponse, json: JSONValue?) -> String {
        if response.bodyTooLarge { return "a body over 1 MiB" }
        let text: String
        if case .string(let error)? = json?["error"] {
            text = error
        } else if case .string(let message)? = json?["message"] {
            text = message
        } else {
            text = response.body
        }
        return ProviderHTTP.safeDetail(text, secrets: secrets)
    }
}
