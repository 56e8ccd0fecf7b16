import Logging
import Primitives
import Queue

/// A sender behind the guardrails: the first step of the send pipeline (guardrails → rate
/// limit → chip selection → breaker → provider). A message a guardrail refuses never reaches
/// `sender`, so it spends no rate-limit budget and no provider call:
///
/// - A blocked doctor, or a campaign over `contact_cap_7d`: FAILED_GUARDRAIL with
///   `guardrail:blocked` / `guardrail:contact_cap_7d`, permanent (`erro`, no retry), so the
///   non-delivery alert counts it.
/// - The guardrails cannot be checked (Postgres slow or down): deferred, no attempt burned.
/// - Let through, then not sent for sure (rate-limited, every circuit open, refused by the
///   provider): its campaign contact is given back. A send that may have gone out (sent, a
///   timeout, a call cut off by shutdown) keeps it, and its retry is not counted again.
public struct GuardedSender: MessageSender {
    public let guardrails: Guardrails
    public let sender: any MessageSender
    /// Counts each decision (`wa_guardrail_decisions_total`).
    public let metrics: SendMetrics

    public init(guardrails: Guardrails, sender: any MessageSender, metrics: SendMetrics = SendMetrics()) {
        self.guardrails = guardrails
        self.sender = sender
        self.metrics = metrics
    }

    public var name: String { sender.name }

    public func readiness() -> SenderReadiness { sender.readiness() }

    public func healthDetails() -> [String: JSONValue] { sender.healthDetails() }

    public func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult {
        let admission: Guardrails.Admission
        do {
            switch try await guardrails.check(message, logger: logger) {
            case .refused(let guardrail, let contacts):
                var metadata: Logger.Metadata = ["guardrail": .string(guardrail.rawValue)]
                if let contacts { metadata["guardrail.contacts_7d"] = .stringConvertible(contacts) }
                logger.info("refused by a guardrail", metadata: metadata)
                metrics.recordGuardrail(guardrail.rawValue, decision: "refused")
                return .permanentFailure(outcome: .failedGuardrail, reasonCode: guardrail.reasonCode, error: Self.explanation(guardrail, contacts: contacts))
            case .allowed(let allowed):
                admission = allowed
                metrics.recordGuardrail(nil, decision: "allowed")
                for guardrail in allowed.bypassed { metrics.recordGuardrail(guardrail.rawValue, decision: "bypassed") }
            }
        } catch is CancellationError {
            return .deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:cancelled", until: .zero)
        } catch {
            logger.error("guardrail check failed; deferring the message", metadata: ["error": .string(String(reflecting: error))])
            metrics.recordGuardrail(nil, decision: "error")
            return .deferred(outcome: .failedGuardrail, reasonCode: "guardrail:unavailable", until: .seconds(30) + Jitter.full.apply(to: .seconds(30)))
        }
        if !admission.bypassed.isEmpty {
            logger.notice(
                "let past guardrails by the message's bypass",
                metadata: ["guardrail.bypassed": .string(admission.bypassed.map(\.rawValue).joined(separator: ","))]
            )
        }
        let result = await sender.send(message, logger: logger)
        if admission.counted && !Self.mayHaveGoneOut(result) {
            await guardrails.release(admission, logger: logger)
        }
        return result
    }

    /// Whether the message may have reached the doctor: sent, a provider timeout (it may
    /// have answered late), or a call cut off by shutdown.
    static func mayHaveGoneOut(_ result: SendResult) -> Bool {
        switch result {
        case .sent: return true
        case .retryableFailure(let outcome, _, _, _): return outcome == .failedTimeout
        case .deferred(let outcome, _, _): return outcome == .failedWorkerLost
        case .permanentFailure: return false
        }
    }

    /// `fila_mensagens.ultimo_erro` for a refusal.
    static func explanation(_ guardrail: Guardrails.Guardrail, contacts: Int?) -> String {
        switch guardrail {
        case .blocked:
            return "the doctor is blocked (ops.medicos_bloqueados); not sent"
        case .contactCap7d:
            return "the doctor already had \(contacts.map(String.init) ?? "the maximum") campaign contacts in the last 7 days (\(GuardrailPolicy.capLimitKey)); not sent"
        }
    }
}
