import Logging

/// What a provider gives back for an accepted message.
public struct ProviderReceipt: Sendable, Hashable {
    /// The provider's `name`.
    public let provider: String
    /// The provider's id for the message (Evolution's `key.id`, Z-API's `messageId`).
    public let messageID: String

    public init(provider: String, messageID: String) {
        self.provider = provider
        self.messageID = messageID
    }
}

/// One WhatsApp gateway. `name` is also its circuit breaker's name.
public protocol WhatsAppProvider: Sendable {
    var name: String { get }

    /// Sends a text message. Throws `ProviderError` (or `CancellationError` when cancelled).
    func sendText(to telefone: String, text: String, logger: Logger) async throws -> ProviderReceipt
}
