import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Primitives

/// Asks a chip's provider whether its WhatsApp session is connected (seed T03.7), over HTTP,
/// within a time limit: Evolution `GET /instance/connectionState/{instance}` (CONTRACTS.md
/// §1.4), Z-API `GET …/status` (§2, connected only when `connected && smartphoneConnected`).
/// A provider that does not answer, or answers something else, gives `unknown`, never
/// "disconnected".
public struct ChipConnectionCheck: Sendable {
    public struct Result: Sendable, Hashable {
        public let state: Chip.ConnectionState
        /// What was seen, for a person: the provider's word, or why the state is unknown.
        public let detail: String
    }

    let httpClient: HTTPClient
    let environment: [String: String]
    public let timeout: Duration

    public init(httpClient: HTTPClient, environment: [String: String] = ProcessInfo.processInfo.environment, timeout: Duration = .seconds(10)) {
        self.httpClient = httpClient
        self.environment = environment
        self.timeout = timeout
    }

    public func check(_ chip: Chip, logger: Logger) async -> Result {
        func secret(_ variable: String?) -> String? {
            guard let variable, let value = environment[variable], !value.isEmpty else { return nil }
            return value
        }
        let url: String
        var headers = HTTPHeaders()
        let secrets: [String]
        switch chip.provider {
        case .evolution:
            guard let key = secret(chip.credentialEnv) else { return Result(state: .unknown, detail: "\(chip.credentialEnv) is not set in this process") }
            url = ProviderHTTP.trimmedBaseURL(chip.baseURL ?? "") + "/instance/connectionState/" + ProviderHTTP.pathSegment(chip.instance)
            headers.add(name: "apikey", value: key)
            secrets = [key]
        case .zapi:
            guard let token = secret(chip.credentialEnv) else { return Result(state: .unknown, detail: "\(chip.credentialEnv) is not set in this process") }
            guard let clientToken = secret(chip.clientTokenEnv) else {
                return Result(state: .unknown, detail: "\(chip.clientTokenEnv ?? "client_token_env") is not set in this process")
            }
            url =
                ProviderHTTP.trimmedBaseURL(chip.baseURL ?? "https://api.z-api.io") + "/instances/" + ProviderHTTP.pathSegment(chip.instance)
                + "/token/" + ProviderHTTP.pathSegment(token) + "/status"
            headers.add(name: "Client-Token", value: clientToken)
            secrets = [token, clientToken]
        }
        let response: ProviderHTTPResponse
        do {
            response = try await ProviderHTTP.get(
                url, headers: headers, provider: chip.provider.rawValue, timeout: timeout, secrets: secrets, httpClient: httpClient, logger: logger
            )
        } catch {
            return Result(state: .unknown, detail: "no answer: \(error)")
        }
        guard response.isSuccess, let json = JSONValue(parsing: response.body) else {
            return Result(state: .unknown, detail: "HTTP \(response.status): " + ProviderHTTP.safeDetail(String(response.body.prefix(200)), secrets: secrets))
        }
        return Self.interpret(json, provider: chip.provider)
    }

    /// The state a status answer amounts to.
    static func interpret(_ json: JSONValue, provider: Chip.Provider) -> Result {
        switch provider {
        case .evolution:
            guard case .object? = json["instance"] else { return Result(state: .unknown, detail: "no instance in the answer") }
            // A missing state: the instance is not in Evolution's memory, so not open (§1.4).
            guard case .string(let state)? = json["instance"]?["state"] else { return Result(state: .close, detail: "no state (instance not loaded)") }
            return Result(state: Chip.ConnectionState(rawValue: state).flatMap { $0 == .unknown ? nil : $0 } ?? .close, detail: state)
        case .zapi:
            guard case .bool(let connected)? = json["connected"] else { return Result(state: .unknown, detail: "no connected in the answer") }
            var smartphone = false
            if case .bool(let value)? = json["smartphoneConnected"] { smartphone = value }
            var said = ""
            if case .string(let text)? = json["error"] { said = text }
            let detail = "connected=\(connected) smartphoneConnected=\(smartphone)" + (said.isEmpty ? "" : ": \(said)")
            return Result(state: connected && smartphone ? .open : .close, detail: detail)
        }
    }
}
