/// Why a provider call failed. Its `kind` decides what the circuit breaker counts.
///
/// ```swift
/// do {
///     let receipt = try await provider.sendText(to: "5511999999999", text: "Olá", logger: logger)
/// } catch let error as ProviderError where error.kind == .recipientRejected {
///     // permanent for this recipient; the provider itself is fine
/// }
/// ```
public struct ProviderError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// No complete answer within the configured deadline.
        case timeout
        /// Connect refused or reset, TLS, DNS, connection closed.
        case network
        /// A non-success status that is not a recipient rejection.
        case http(status: Int)
        /// The number is not on WhatsApp (Evolution's 400 with `exists:false`).
        case recipientRejected
        /// A success status whose body lacks the message id, or Z-API's `{"value":false}`.
        case invalidResponse
    }

    /// The most of a provider's text kept in `detail`.
    public static let maximumDetailLength = 300

    public let provider: String
    public let kind: Kind
    /// Short and safe to log and store in `fila_mensagens.ultimo_erro`: never an API key, a
    /// token or the message text; at most ~300 characters of the provider's body.
    public let detail: String

    /// `detail` is flattened to one line and cut to `maximumDetailLength`; redacting secrets
    /// is the caller's job.
    public init(provider: String, kind: Kind, detail: String) {
        self.provider = provider
        self.kind = kind
        self.detail = Self.shortened(detail)
    }

    /// For example `evolution: HTTP 500: Connection Closed`.
    public var description: String {
        let summary: String
        switch kind {
        case .timeout: summary = "timeout"
        case .network: summary = "network error"
        case .http(let status): summary = "HTTP \(status)"
        case .recipientRejected: summary = "number not on WhatsApp"
        case .invalidResponse: summary = "invalid response"
        }
        return detail.isEmpty ? "\(provider): \(summary)" : "\(provider): \(summary): \(detail)"
    }

    /// A stable code for `fila_mensagens.outcome_reason_code`, e.g. `evolution:http_500`,
    /// `evolution:timeout`, `evolution:number_not_on_whatsapp`, `zapi:invalid_response`.
    public var reasonCode: String {
        let code: String
        switch kind {
        case .timeout: code = "timeout"
        case .network: code = "network"
        case .http(let status): code = "http_\(status)"
        case .recipientRejected: code = "number_not_on_whatsapp"
        case .invalidResponse: code = "invalid_response"
        }
        return "\(provider):\(code)"
    }

    /// One line, at most `maximumDetailLength` characters.
    static func shortened(_ text: String) -> String {
        var line = ""
        var lastWasSpace = false
        for character in text {
            if character.unicodeScalars.allSatisfy({ $0.properties.generalCategory == .control }) && !(character.isNewline || character == "\t") {
                // NUL and other control characters: Postgres refuses NUL in text, and none of
                // them belongs in a one-line detail.
                continue
            }
            if character.isNewline || character == "\t" || character == " " {
                if !lastWasSpace, !line.isEmpty { line.append(" ") }
                lastWasSpace = true
            } else {
                line.append(character)
                lastWasSpace = false
            }
        }
        while line.last == " " { line.removeLast() }
        guard line.count > maximumDetailLength else { return line }
        return String(line.prefix(maximumDetailLength - 1)) + "…"
    }
}
