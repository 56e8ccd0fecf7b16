import Database
import Foundation
import Logging
import Primitives
import Queue
import Resilience

/// The send pipeline a worker runs per message: rate limit → providers in order, each
/// behind its circuit breaker → outcome (seed T01.3, T02.4, T04.1–T04.3).
///
/// - A doctor over the daily budget: deferred to the next window plus jitter,
///   FAILED_RATE_LIMIT, no attempt burned.
/// - A provider whose circuit is open is skipped without a call (Evolution → Z-API); when
///   every circuit is open the message is deferred until the first may admit a call again,
///   FAILED_CIRCUIT_OPEN, no attempt burned, and the budget spent on it is given back.
/// - A provider that fails after the call was made is not followed by the next one, since
///   the first may have delivered: the message is retried later with backoff.
/// - Evolution's "number not on WhatsApp" fails the message for good (FAILED_VALIDATION).
/// - The budget is given back when the message surely did not go out (every circuit open,
///   a refused connection, an HTTP error, a recipient rejection). A timeout or a call cut
///   off by shutdown may have delivered it: that budget stays spent, and the retry is
///   charged again, so a doctor never receives more than the budget.
public final class WhatsAppSender: MessageSender {
    public struct Route: Sendable {
        public let provider: any WhatsAppProvider
        public let breaker: CircuitBreaker

        public init(provider: any WhatsAppProvider, breaker: CircuitBreaker) {
            self.provider = provider
            self.breaker = breaker
        }
    }

    public let name: String
    public let routes: [Route]
    public let rateLimiter: RateLimiter?
    /// Random extra delay on circuit-open deferrals, so deferred rows do not all come due
    /// in the same instant when the circuit half-opens (seed T04.3).
    public let circuitDeferralJitter: Duration
    /// When set, nothing is sent until its overrides were read once.
    public let registry: CircuitBreakerRegistry?
    public let metrics: SendMetrics
    /// The chips table; while it has a chip in service, messages go through its chips and
    /// `routes` are not used (see `WhatsAppSender+Chips.swift`).
    public let chips: ChipRoster?

    public init(
        routes: [Route],
        rateLimiter: RateLimiter?,
        registry: CircuitBreakerRegistry? = nil,
        chips: ChipRoster? = nil,
        circuitDeferralJitter: Duration = .seconds(30),
        metrics: SendMetrics = SendMetrics()
    ) {
        precondition(!routes.isEmpty || chips != nil, "a WhatsApp sender needs at least one provider or the chips table")
        self.chips = chips
        self.routes = routes
        self.rateLimiter = rateLimiter
        self.circuitDeferralJitter = circuitDeferralJitter
        self.registry = registry
        self.metrics = metrics
        self.name = routes.isEmpty ? "chips" : routes.map(\.provider.name).joined(separator: "+")
    }

    public func readiness() -> SenderReadiness {
        if let registry, !registry.overridesLoaded {
            return .paused(retryAfter: .milliseconds(100), reason: "reading the circuit overrides")
        }
        if let chipReadiness = chipReadiness() { return chipReadiness }
        var limit: Int? = 0
        var retryAfter: Duration?
        var closed: [String] = []
        for route in routes {
            switch route.breaker.readiness() {
            case .available(let probes):
                if let probes, let current = limit { limit = current + probes } else { limit = nil }
            case .unavailable(let state, let wait):
                closed.append("\(route.breaker.name) \(state.rawValue)")
                retryAfter = min(retryAfter ?? wait, wait)
            }
        }
        if limit == 0, let retryAfter {
            return .paused(retryAfter: retryAfter, reason: "every provider's circuit is open: \(closed.joined(separator: ", "))")
        }
        return .ready(limit: limit)
    }

    /// `{"circuits": {"evolution": "OPEN", …}, "redis": "up" | "down since …: …" | "not configured"}`.
    public func healthDetails() -> [String: JSONValue] {
        var circuits: [String: JSONValue] = [:]
        for route in routes + (chips?.cached?.entries.map(\.route) ?? []) {
            circuits[route.breaker.name] = .string(route.breaker.state.rawValue)
        }
        var details: [String: JSONValue] = ["circuits": .object(circuits)]
        if let rateLimiter {
            switch rateLimiter.redisHealth {
            case .notConfigured: details["redis"] = "not configured"
            case .up: details["redis"] = "up"
            case .down(let since, let error):
                details["redis"] = .string("down since \(since.formatted(.iso8601)), rate limits on Postgres: \(error)")
            }
        } else {
            details["rate_limit"] = "off"
        }
        return details
    }

    public func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult {
        var budget: RateLimiter.Decision?
        if let rateLimiter {
            do {
                let decision = try await rateLimiter.consume(key: message.clienteID, kind: message.tipo.rawValue, logger: logger)
                metrics.recordRateLimit(store: decision.store, allowed: decision.isAllowed)
                if case .limited(let retryAfter) = decision.verdict {
                    logger.info(
                        "over the doctor's daily budget; deferred to the next window",
                        metadata: ["rate.used": .stringConvertible(decision.used), "rate.budget": .stringConvertible(decision.budget)]
                    )
                    return .deferred(
                        outcome: .failedRateLimit,
                        reasonCode: "rate_limit:cliente_diario",
                        until: retryAfter + Jitter.full.apply(to: decision.deferralSpread)
                    )
                }
                budget = decision
            } catch {
                // No check, no send: the message waits for the limiter's store to come back.
                metrics.recordRateLimit(store: nil, allowed: nil)
                logger.error("rate-limit check failed; deferring the message", metadata: ["error": .string(String(reflecting: error))])
                return .deferred(outcome: .failedRateLimit, reasonCode: "rate_limit:unavailable", until: .seconds(30) + Jitter.full.apply(to: .seconds(30)))
            }
        }

        if let chips {
            switch await chipSnapshot(chips, logger: logger) {
            case .some(.success(let snapshot)) where !snapshot.isEmpty || routes.isEmpty:
                // No chip and no provider of its own: deferred FAILED_NO_CHIP there.
                return await sendThroughChips(message, snapshot: snapshot, budget: budget, logger: logger)
            case .some(.failure(let deferral)):
                await refund(budget, logger: logger)
                return deferral.result
            default:
                break  // no chip in the table: the environment's providers, as before chips
            }
        }

        var rejected: [CircuitOpenError] = []
        for route in routes {
            switch await attempt(route, message, logger: logger) {
            case .sent(let receipt):
                if !rejected.isEmpty {
                    logger.info("sent through a fallback provider", metadata: ["provider": .string(receipt.provider)])
                }
                return .sent(provider: receipt.provider, providerMessageID: receipt.messageID, chipID: nil)
            case .circuitOpen(let error):
                rejected.append(error)
                continue
            case .failed(let result, let surelyNotSent):
                if surelyNotSent { await refund(budget, logger: logger) }
                return result
            }
        }

        // Every circuit rejected the call: nothing was sent.
        await refund(budget, logger: logger)
        let wait = rejected.map(\.retryAfter).min() ?? .seconds(60)
        return .deferred(
            outcome: .failedCircuitOpen,
            reasonCode: "circuit_open:" + rejected.map(\.circuit).joined(separator: ","),
            until: wait + Jitter.full.apply(to: circuitDeferralJitter)
        )
    }

    /// How one call through one route ended.
    enum Attempt {
        case sent(ProviderReceipt)
        /// The breaker refused the call: nothing was sent.
        case circuitOpen(CircuitOpenError)
        /// The call failed; `surelyNotSent` when the message cannot have gone out, so what
        /// was spent on it (the doctor's budget, the chip's count) is given back.
        case failed(SendResult, surelyNotSent: Bool)
    }

    /// One call through `route`'s breaker (the chip `chipID`'s, when chips are in use), and
    /// what its failure means for the message. A failure names the provider and chip it went
    /// through, for the row and the chip's failure count.
    func attempt(_ route: Route, chipID: String? = nil, _ message: ClaimedMessage, logger: Logger) async -> Attempt {
        let via = AttemptRoute(provider: route.provider.name, chipID: chipID)
        do {
            let receipt = try await route.breaker.execute { [metrics] in
                try await metrics.timing(provider: route.provider.name, chip: chipID) {
                    try await route.provider.sendText(to: message.telefone, text: message.conteudo, logger: logger)
                }
            }
            return .sent(receipt)
        } catch let error as CircuitOpenError {
            return .circuitOpen(error)
        } catch let error as ProviderError {
            switch error.kind {
            case .recipientRejected:
                return .failed(.permanentFailure(outcome: .failedValidation, reasonCode: error.reasonCode, error: error.description, route: via), surelyNotSent: true)
            case .timeout:
                // It may have gone out (the gateway answered late), so the budget stays
                // spent and the retry is charged again: erring towards sending a doctor
                // less, never more, than the budget.
                return .failed(.retryableFailure(outcome: .failedTimeout, reasonCode: error.reasonCode, error: error.description, route: via), surelyNotSent: false)
            case .network, .http, .invalidResponse:
                return .failed(.retryableFailure(outcome: .failedProvider, reasonCode: error.reasonCode, error: error.description, route: via), surelyNotSent: true)
            }
        } catch is CancellationError {
            // Shutdown cut the call off; it may have gone out, so the budget stays spent.
            return .failed(.deferred(outcome: .failedWorkerLost, reasonCode: "shutdown:cancelled", until: .zero), surelyNotSent: false)
        } catch {
            return .failed(
                .retryableFailure(outcome: .failedProvider, reasonCode: "\(route.provider.name):unexpected", error: String(describing: error), route: via),
                surelyNotSent: true
            )
        }
    }

    func refund(_ decision: RateLimiter.Decision?, logger: Logger) async {
        guard let decision, let rateLimiter else { return }
        await rateLimiter.refund(decision, logger: logger)
    }
}

extension ProviderError: ClassifiedError {
    /// Timeouts are not counted; a recipient rejection shows the provider works.
    public var errorType: ErrorType {
        switch kind {
        case .timeout: return .timeout
        case .network: return .network
        case .http(let status): return ErrorType.forHTTPStatus(status)
        case .recipientRejected: return .recipient
        case .invalidResponse: return .serverError
        }
    }
}
