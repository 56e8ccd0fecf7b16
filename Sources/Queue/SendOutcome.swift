/// How an attempt to send a message ended, stored as text in `fila_mensagens.outcome`.
/// A closed set: the schema's CHECK constraint lists the same values.
public enum SendOutcome: String, Sendable, CaseIterable, Codable {
    /// The provider accepted the message.
    case sent = "SENT"
    /// The provider failed (5xx, network, refused); retried with backoff.
    case failedProvider = "FAILED_PROVIDER"
    /// The provider did not answer in time; retried with backoff.
    case failedTimeout = "FAILED_TIMEOUT"
    /// The message itself is unsendable (number not on WhatsApp, bad content); final.
    case failedValidation = "FAILED_VALIDATION"
    /// The doctor's daily budget is spent; deferred to the next window, no attempt burned.
    case failedRateLimit = "FAILED_RATE_LIMIT"
    /// A guardrail (contact cap, opt-out) blocked the send; final unless bypassed.
    case failedGuardrail = "FAILED_GUARDRAIL"
    /// Every usable provider's circuit is open; deferred, no attempt burned.
    case failedCircuitOpen = "FAILED_CIRCUIT_OPEN"
    /// No chip (WhatsApp number) is eligible to send; deferred, no attempt burned.
    case failedNoChip = "FAILED_NO_CHIP"
    /// Pending for longer than the expiry age (24 h); cancelled.
    case failedExpired = "FAILED_EXPIRED"
    /// Processing for longer than the stuck timeout (60 min); returned with an attempt burned.
    case failedStuck = "FAILED_STUCK"
    /// The worker holding it stopped heart-beating; returned, no attempt burned.
    case failedWorkerLost = "FAILED_WORKER_LOST"
    /// Cancelled by an operator.
    case cancelledManual = "CANCELLED_MANUAL"
}

/// `fila_mensagens.status`.
public enum MessageStatus: String, Sendable, CaseIterable, Codable {
    case pendente
    case processando
    case enviada
    case erro
    case cancelada
}

/// `fila_mensagens.tipo`: why the message is sent, which sets its rate-limit weight.
public enum MessageKind: String, Sendable, CaseIterable, Codable {
    /// A reply to a doctor who wrote first.
    case resposta
    case campanha
    case followup
    case sistema
}
