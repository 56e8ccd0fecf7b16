import Foundation

/// A WhatsApp number to send through: a row of `chips` (seed T05). Its secrets are not here,
/// only the names of the environment variables that hold them.
public struct Chip: Sendable, Hashable {
    public enum Provider: String, Sendable, Hashable {
        case evolution
        case zapi
    }

    public enum Status: String, Sendable, Hashable {
        case ativo
        case pausado
        case banido
    }

    /// `chips.connection_state`: what the provider last said about the number's session.
    public enum ConnectionState: String, Sendable, Hashable, CaseIterable {
        case open
        case connecting
        case close
        case refused
        /// Never checked, or the provider did not answer the last check: not "disconnected".
        case unknown

        /// Whether selection may pick the chip: anything but a state the provider reported
        /// as not connected. A chip never checked (or whose provider is not answering) stays
        /// eligible; its breaker covers a provider that is really down.
        public var allowsSending: Bool {
            switch self {
            case .open, .unknown: return true
            case .connecting, .close, .refused: return false
            }
        }
    }

    public var id: String
    public var nome: String
    public var provider: Provider
    /// Evolution: the instance name; Z-API: the instance id.
    public var instance: String
    /// Evolution: the API's URL; Z-API: nil for the hosted API.
    public var baseURL: String?
    /// The environment variable holding the Evolution apikey or the Z-API instance token.
    public var credentialEnv: String
    /// Z-API: the environment variable holding the account's Client-Token.
    public var clientTokenEnv: String?
    public var status: Status
    public var isDefault: Bool
    public var dailyLimit: Int
    public var minimumInterval: Duration
    public var connectionState: ConnectionState

    public init(
        id: String, nome: String, provider: Provider, instance: String, baseURL: String?, credentialEnv: String,
        clientTokenEnv: String?, status: Status, isDefault: Bool, dailyLimit: Int, minimumInterval: Duration,
        connectionState: ConnectionState
    ) {
        self.id = id
        self.nome = nome
        self.provider = provider
        self.instance = instance
        self.baseURL = baseURL
        self.credentialEnv = credentialEnv
        self.clientTokenEnv = clientTokenEnv
        self.status = status
        self.isDefault = isDefault
        self.dailyLimit = dailyLimit
        self.minimumInterval = minimumInterval
        self.connectionState = connectionState
    }

    /// The chip's circuit breaker: one per chip, so one banned or disconnected number never
    /// stops the others.
    public var circuitName: String { "chip." + id }

    /// Active and not reported disconnected. The daily limit and the pacing are Postgres's to
    /// decide, at reservation.
    public var isSelectable: Bool { status == .ativo && connectionState.allowsSending }
}
