#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Metrics
import Observability
import Queue
import Resilience

/// What the send pipeline counts: every provider call by provider and outcome, its duration,
/// the last success, and every rate-limit decision. Handles are made once per label set.
public final class SendMetrics: Sendable {
    public static let calls = MetricDescriptor(
        "wa_messages_sent_total", .counter, labels: ["provider", "outcome"],
        help: "Provider calls by provider and outcome (SENT, FAILED_PROVIDER, FAILED_TIMEOUT, FAILED_VALIDATION), counted by this process."
    )
    public static let duration = MetricDescriptor(
        "wa_send_duration_seconds", .histogram, labels: ["provider"],
        help: "How long provider calls took, whatever their outcome."
    )
    public static let lastSuccess = MetricDescriptor(
        "wa_last_successful_send_timestamp_seconds", .gauge,
        help: "Unix time of this process's last successful send."
    )
    public static let rateLimit = MetricDescriptor(
        "wa_rate_limit_decisions_total", .counter, labels: ["store", "result"],
        help: "Rate-limit checks by the store that decided (postgres, redis, none) and result (allowed, limited, error)."
    )
    public static let circuitState = MetricDescriptor(
        "wa_circuit_breaker_state", .gauge, labels: ["provider", "state"],
        help: "1 for the state each provider's circuit breaker is in in this process, 0 for the others."
    )
    public static let providerUp = MetricDescriptor(
        "wa_provider_up", .gauge, labels: ["provider"],
        help: "1 while the provider's circuit admits calls in this process (not OPEN nor FORCED_OPEN), else 0."
    )
    public static let chipCalls = MetricDescriptor(
        "wa_chip_calls_total", .counter, labels: ["chip", "outcome"],
        help: "Provider calls through each chip of the chips table by outcome (as wa_messages_sent_total), counted by this process."
    )
    public static let noChip = MetricDescriptor(
        "wa_no_chip_deferrals_total", .counter, labels: ["reason"],
        help: "Messages deferred FAILED_NO_CHIP because no chip could send them, by reason code (no_chip:pacing, no_chip:limit_or_disconnected, no_chip:none_eligible, no_chip:unreadable)."
    )
    public static let guardrailDecisions = MetricDescriptor(
        "wa_guardrail_decisions_total", .counter, labels: ["guardrail", "decision"],
        help: "Guardrail checks: decision refused (guardrail blocked or contact_cap_7d), bypassed (per guardrail a message's bypass let it past), allowed or error (guardrail none)."
    )
    public static let descriptors = [calls, duration, lastSuccess, rateLimit, circuitState, providerUp, chipCalls, noChip, guardrailDecisions]

    /// Buckets for ``duration``: provider calls take from tens of milliseconds to the
    /// provider timeout (30 s by default).
    public static let durationBuckets: [Duration] = [
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    private let callCounters: MetricFamily<Counter>
    private let durations: MetricFamily<Metrics.Timer>
    private let rateLimitCounters: MetricFamily<Counter>
    private let lastSuccessGauge: Gauge
    private let chipCounters: MetricFamily<Counter>
    private let noChipCounters: MetricFamily<Counter>
    private let guardrailCounters: MetricFamily<Counter>

    /// Made from `factory`, by default the task-local or global one at the time of creation.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        callCounters = .counter(Self.calls, factory: factory)
        durations = .histogram(Self.duration, factory: factory)
        rateLimitCounters = .counter(Self.rateLimit, factory: factory)
        lastSuccessGauge = Gauge(label: Self.lastSuccess.name, factory: factory)
        chipCounters = .counter(Self.chipCalls, factory: factory)
        noChipCounters = .counter(Self.noChip, factory: factory)
        guardrailCounters = .counter(Self.guardrailDecisions, factory: factory)
    }

    /// One provider call, through the chip `chip` when chips are in use, that ended in
    /// `outcome` after `duration`.
    public func recordCall(provider: String, chip: String? = nil, outcome: SendOutcome, duration: Duration) {
        callCounters(provider, outcome.rawValue).increment()
        if let chip { chipCounters(chip, outcome.rawValue).increment() }
        durations(provider).record(duration: duration)
        if outcome == .sent {
            lastSuccessGauge.record(Date().timeIntervalSince1970)
        }
    }

    /// A message deferred FAILED_NO_CHIP with `reasonCode`.
    public func recordNoChip(reasonCode: String) {
        noChipCounters(reasonCode).increment()
    }

    /// One guardrail decision; `guardrail` nil for a decision about the check as a whole
    /// (allowed, error).
    public func recordGuardrail(_ guardrail: String?, decision: String) {
        guardrailCounters(guardrail ?? "none", decision).increment()
    }

    public func recordRateLimit(store: RateLimiter.Store?, allowed: Bool?) {
        let result = allowed.map { $0 ? "allowed" : "limited" } ?? "error"
        rateLimitCounters(store?.rawValue ?? "none", result).increment()
    }

    /// `wa_circuit_breaker_state` one-hot and `wa_provider_up` for `breakers`, read now.
    public static func circuitSamples(_ breakers: [CircuitBreaker]) -> [MetricSample] {
        var samples: [MetricSample] = []
        for breaker in breakers {
            let state = breaker.state
            for candidate in CircuitState.allCases {
                samples.append(MetricSample(circuitState.name, labels: ["provider": breaker.name, "state": candidate.rawValue], value: candidate == state ? 1 : 0))
            }
        }
        for breaker in breakers {
            let up = breaker.state != .open && breaker.state != .forcedOpen
            samples.append(MetricSample(providerUp.name, labels: ["provider": breaker.name], value: up ? 1 : 0))
        }
        return samples
    }
}

extension SendMetrics {
    /// Runs one provider call and records it: its outcome as the worker will write it, and
    /// its duration. A call cut off by shutdown is not a provider outcome and is not counted.
    func timing<Result>(provider: String, chip: String? = nil, _ call: () async throws -> Result) async throws -> Result {
        let started = ContinuousClock.now
        do {
            let result = try await call()
            recordCall(provider: provider, chip: chip, outcome: .sent, duration: ContinuousClock.now - started)
            return result
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as ProviderError {
            let outcome: SendOutcome = switch error.kind {
            case .recipientRejected: .failedValidation
            case .timeout: .failedTimeout
            case .network, .http, .invalidResponse: .failedProvider
            }
            recordCall(provider: provider, chip: chip, outcome: outcome, duration: ContinuousClock.now - started)
            throw error
        } catch {
            recordCall(provider: provider, chip: chip, outcome: .failedProvider, duration: ContinuousClock.now - started)
            throw error
        }
    }
}
