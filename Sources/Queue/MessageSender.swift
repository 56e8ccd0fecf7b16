import Logging
import Primitives

/// Sends one message somewhere (a WhatsApp provider, the sandbox) and says how it went.
///
/// A sender never throws: every failure is classified into an `AttemptResolution`, because
/// only the sender knows whether an error is worth retrying. Cancellation (shutdown past its
/// deadline) may interrupt it; the worker then hands the message back.
public protocol MessageSender: Sendable {
    /// A short name for logs and `fila_mensagens.provider`.
    var name: String { get }

    func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult

    /// Whether sends can go anywhere now. The worker asks before each claim, so it claims
    /// nothing while every provider's circuit is open and at most `limit` rows while only
    /// probes are admitted. Senders without circuits are always ready.
    func readiness() -> SenderReadiness

    /// What the sender's dependencies look like now (circuit states, the rate limiter's
    /// store), for the heartbeat row's `metadata`.
    func healthDetails() -> [String: JSONValue]
}

extension MessageSender {
    public func readiness() -> SenderReadiness { .ready(limit: nil) }
    public func healthDetails() -> [String: JSONValue] { [:] }
}

/// What a sender can take now.
public enum SenderReadiness: Sendable, Hashable {
    /// Send away: any number of messages (`nil`), or at most `limit`.
    case ready(limit: Int?)
    /// Nothing can be sent for now (every provider's circuit is open); look again after
    /// `retryAfter`.
    case paused(retryAfter: Duration, reason: String)
}

/// What a sender reports; the worker turns retries into a backoff schedule.
public enum SendResult: Sendable, Hashable {
    case sent(provider: String?, providerMessageID: String?, chipID: String?)
    /// Retry later with backoff; after the last attempt the message ends in `erro`. `route`
    /// is what the failed call went through, when one was made.
    case retryableFailure(outcome: SendOutcome, reasonCode: String, error: String, route: AttemptRoute? = nil)
    /// Final: no retry can fix it.
    case permanentFailure(outcome: SendOutcome, reasonCode: String, error: String, route: AttemptRoute? = nil)
    /// Try again after `until` without spending an attempt.
    case deferred(outcome: SendOutcome, reasonCode: String, until: Duration)
}

/// The provider, and the chip when the chips table is in use, that an attempt went through.
/// A failed attempt records it on its row (`provider`, `chip_id`), and a chip's failures are
/// counted by hour in `chip_falhas`, so a failing number shows in `ops.chips_uso`.
public struct AttemptRoute: Sendable, Hashable {
    public let provider: String
    public let chipID: String?

    public init(provider: String, chipID: String?) {
        self.provider = provider
        self.chipID = chipID
    }
}
