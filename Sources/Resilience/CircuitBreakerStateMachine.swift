import Primitives

/// The circuit breaker's logic with no clock, no locks and no I/O: every method takes the
/// current instant and returns what changed, so every transition can be tested alone.
/// `CircuitBreaker` wraps it for concurrent callers.
///
/// - CLOSED → OPEN after `consecutiveFailures` counted failures in a row (or the optional
///   failure rate over a window).
/// - OPEN → HALF_OPEN lazily, on the first call after the reset wait.
/// - HALF_OPEN admits `halfOpenProbes` calls; all succeed → CLOSED (the wait falls back to
///   its initial value); one fails → OPEN with the wait multiplied.
/// - FORCED_OPEN and FORCED_CLOSED are set and lifted by hand and count nothing.
/// - A call's result is applied only to the state it was admitted in: a slow call that
///   started before the breaker opened cannot close it, nor open it again.
public struct CircuitBreakerStateMachine: Sendable {
    /// Whether a call may go ahead.
    public enum Permission: Sendable, Hashable {
        case permitted(CallTicket)
        case rejected(state: CircuitState, retryAfter: Duration)
    }

    /// Handed out with each admitted call; returned with its result.
    public struct CallTicket: Sendable, Hashable {
        let generation: UInt64
        let isProbe: Bool
    }

    /// How a call ended, as far as the breaker is concerned (`CallClassification` decides).
    public enum CallResult: Sendable, Hashable {
        case success
        /// A counted failure; `detail` goes into the transition's reason.
        case failure(detail: String)
        /// Neither success nor failure (a timeout, a cancelled call).
        case ignored
    }

    /// What the worker may do with this breaker now.
    public enum Readiness: Sendable, Hashable {
        /// Calls may go ahead: any number (`nil`), or only this many probes.
        case available(limit: Int?)
        case unavailable(state: CircuitState, retryAfter: Duration)
    }

    public typealias Instant = ContinuousClock.Instant

    public let circuit: String
    public let policy: CircuitBreakerPolicy
    public private(set) var state: CircuitState = .closed
    /// Counted failures in a row (`falhas_consecutivas`).
    public private(set) var consecutiveFailures = 0
    /// Failed half-open probes since the breaker last closed: drives the reset wait.
    public private(set) var failedProbes = 0
    private var generation: UInt64 = 0
    private var openUntil: Instant?
    private var probesInFlight = 0
    private var probeSuccesses = 0
    private var rateWindow: SlidingCounts?

    public init(circuit: String, policy: CircuitBreakerPolicy) {
        self.circuit = circuit
        self.policy = policy
        self.rateWindow = policy.failureRate.map { SlidingCounts(window: $0.window) }
    }

    /// The reset wait the next opening will use.
    public var nextResetWait: Duration { policy.resetWait(afterFailedProbes: failedProbes) }

    // MARK: - Calls

    /// Asks to make a call. An OPEN breaker whose wait has passed turns HALF_OPEN here.
    public mutating func acquire(now: Instant) -> (Permission, [CircuitTransition]) {
        var transitions: [CircuitTransition] = []
        switch state {
        case .closed, .forcedClosed:
            return (.permitted(CallTicket(generation: generation, isProbe: false)), [])
        case .forcedOpen:
            return (.rejected(state: .forcedOpen, retryAfter: policy.initialResetWait), [])
        case .open:
            let until = openUntil ?? now
            guard now >= until else { return (.rejected(state: .open, retryAfter: until - now), []) }
            let probes = policy.halfOpenProbes
            transitions.append(move(to: .halfOpen, reason: "reset wait of \(format(nextResetWait)) passed; admitting \(probes) probe\(probes == 1 ? "" : "s")", now: now))
            probesInFlight = 0
            probeSuccesses = 0
        case .halfOpen:
            break
        }
        // HALF_OPEN: admit up to the configured probes.
        guard probesInFlight + probeSuccesses < policy.halfOpenProbes else {
            return (.rejected(state: .halfOpen, retryAfter: Self.probeRecheck), transitions)
        }
        probesInFlight += 1
        return (.permitted(CallTicket(generation: generation, isProbe: true)), transitions)
    }

    /// Records how an admitted call ended.
    public mutating func record(_ result: CallResult, for ticket: CallTicket, now: Instant) -> [CircuitTransition] {
        // Admitted before the last transition (or under an override): it says nothing about now.
        guard ticket.generation == generation, !state.isForced else { return [] }
        switch state {
        case .closed:
            return recordClosed(result, now: now)
        case .halfOpen:
            return recordProbe(result, now: now)
        case .open, .forcedOpen, .forcedClosed:
            return []
        }
    }

    private mutating func recordClosed(_ result: CallResult, now: Instant) -> [CircuitTransition] {
        switch result {
        case .ignored:
            return []
        case .success:
            consecutiveFailures = 0
            rateWindow?.add(failed: false, at: now)
            return []
        case .failure(let detail):
            consecutiveFailures += 1
            rateWindow?.add(failed: true, at: now)
            if consecutiveFailures >= policy.consecutiveFailures {
                return [open(now: now, reason: "\(consecutiveFailures) consecutive failures; last: \(detail)")]
            }
            if let rule = policy.failureRate, let window = rateWindow {
                let (calls, failures) = window.totals(at: now)
                if calls >= rule.minimumCalls, Double(failures) / Double(calls) >= rule.threshold {
                    let percent = Int((Double(failures) / Double(calls) * 100).rounded())
                    return [open(now: now, reason: "failure rate \(percent)% over \(calls) calls in \(format(rule.window)); last: \(detail)")]
                }
            }
            return []
        }
    }

    private mutating func recordProbe(_ result: CallResult, now: Instant) -> [CircuitTransition] {
        probesInFlight = max(0, probesInFlight - 1)
        switch result {
        case .ignored:
            // The slot frees up for another probe.
            return []
        case .success:
            probeSuccesses += 1
            guard probeSuccesses >= policy.halfOpenProbes else { return [] }
            failedProbes = 0
            consecutiveFailures = 0
            rateWindow?.reset()
            let probes = policy.halfOpenProbes
            return [move(to: .closed, reason: probes == 1 ? "probe succeeded" : "\(probes) probes succeeded", now: now)]
        case .failure(let detail):
            failedProbes += 1
            consecutiveFailures += 1
            return [open(now: now, reason: "probe failed: \(detail)")]
        }
    }

    // MARK: - Other replicas and overrides

    /// Another process opened this circuit: stop calling too, for as long as it does.
    /// Ignored unless CLOSED (a HALF_OPEN breaker's own probe decides; forced states win).
    public mutating func followRemoteOpen(openFor: Duration, reason: String, now: Instant) -> [CircuitTransition] {
        guard state == .closed else { return [] }
        openUntil = now + openFor
        return [move(to: .open, reason: reason, openFor: openFor, isLocal: false, now: now)]
    }

    /// Applies the override in `circuit_overrides` (or its absence, `nil`).
    public mutating func applyOverride(_ override: CircuitState?, reason: String, now: Instant) -> [CircuitTransition] {
        switch override {
        case .forcedOpen, .forcedClosed:
            guard state != override else { return [] }
            return [move(to: override!, reason: "override: \(reason)", isLocal: false, now: now)]
        case .none:
            guard state.isForced else { return [] }
            consecutiveFailures = 0
            failedProbes = 0
            rateWindow?.reset()
            return [move(to: .closed, reason: "override lifted", isLocal: false, now: now)]
        case .closed, .open, .halfOpen:
            return []
        }
    }

    // MARK: - Readiness

    /// Whether a call made now would be admitted, without changing anything.
    public func readiness(now: Instant) -> Readiness {
        switch state {
        case .closed, .forcedClosed:
            return .available(limit: nil)
        case .forcedOpen:
            return .unavailable(state: .forcedOpen, retryAfter: policy.initialResetWait)
        case .open:
            let until = openUntil ?? now
            return now >= until ? .available(limit: policy.halfOpenProbes) : .unavailable(state: .open, retryAfter: until - now)
        case .halfOpen:
            let free = policy.halfOpenProbes - probesInFlight - probeSuccesses
            return free > 0 ? .available(limit: free) : .unavailable(state: .halfOpen, retryAfter: Self.probeRecheck)
        }
    }

    /// How soon to look again while every probe slot is taken.
    static let probeRecheck: Duration = .seconds(1)

    // MARK: - Helpers

    private mutating func open(now: Instant, reason: String) -> CircuitTransition {
        let wait = nextResetWait
        openUntil = now + wait
        return move(to: .open, reason: "\(reason); next probe in \(format(wait))", openFor: wait, isLocal: true, now: now)
    }

    private mutating func move(to next: CircuitState, reason: String, openFor: Duration? = nil, isLocal: Bool = true, now: Instant) -> CircuitTransition {
        let transition = CircuitTransition(
            circuit: circuit, from: state, to: next, reason: reason,
            consecutiveFailures: consecutiveFailures, openFor: openFor, isLocal: isLocal, at: now
        )
        state = next
        generation &+= 1
        if next != .halfOpen {
            probesInFlight = 0
            probeSuccesses = 0
        }
        if next == .closed || next.isForced { openUntil = nil }
        if next == .closed { consecutiveFailures = 0 }
        return transition
    }
}

/// "60 s", "1.5 s", "10 min".
func format(_ duration: Duration) -> String {
    let seconds = duration.seconds
    if seconds >= 120, seconds.truncatingRemainder(dividingBy: 60) == 0 { return "\(Int(seconds / 60)) min" }
    if seconds == seconds.rounded() { return "\(Int(seconds)) s" }
    return "\((seconds * 10).rounded() / 10) s"
}

/// Calls and failures over a sliding time window, in ten buckets so memory stays flat
/// however many calls go through.
struct SlidingCounts: Sendable {
    private struct Bucket: Sendable {
        var start: ContinuousClock.Instant
        var calls = 0
        var failures = 0
    }

    let window: Duration
    private let bucketLength: Duration
    private var buckets: [Bucket] = []

    init(window: Duration) {
        self.window = window
        self.bucketLength = window / 10
    }

    mutating func add(failed: Bool, at now: ContinuousClock.Instant) {
        prune(now)
        if let last = buckets.last, now - last.start < bucketLength {
            buckets[buckets.count - 1].calls += 1
            if failed { buckets[buckets.count - 1].failures += 1 }
        } else {
            buckets.append(Bucket(start: now, calls: 1, failures: failed ? 1 : 0))
        }
    }

    func totals(at now: ContinuousClock.Instant) -> (calls: Int, failures: Int) {
        var calls = 0
        var failures = 0
        for bucket in buckets where now - bucket.start < window {
            calls += bucket.calls
            failures += bucket.failures
        }
        return (calls, failures)
    }

    mutating func reset() { buckets.removeAll() }

    private mutating func prune(_ now: ContinuousClock.Instant) {
        buckets.removeAll { now - $0.start >= window }
    }
}
