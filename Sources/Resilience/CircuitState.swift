import Primitives

/// A circuit breaker's state, spelled as `circuit_transitions` stores it.
public enum CircuitState: String, Sendable, Hashable, CaseIterable, Codable {
    /// Calls go through; counted failures may open it.
    case closed = "CLOSED"
    /// Calls are rejected until the reset wait passes.
    case open = "OPEN"
    /// A few probe calls decide between CLOSED and OPEN again.
    case halfOpen = "HALF_OPEN"
    /// Held open by hand: every call is rejected, nothing is counted.
    case forcedOpen = "FORCED_OPEN"
    /// Held closed by hand: every call goes through, nothing opens it.
    case forcedClosed = "FORCED_CLOSED"

    /// Whether this is a manual override.
    public var isForced: Bool { self == .forcedOpen || self == .forcedClosed }
}

/// One state change, as `circuit_transitions` records it.
public struct CircuitTransition: Sendable, Hashable {
    public let circuit: String
    public let from: CircuitState
    public let to: CircuitState
    public let reason: String
    /// Counted failures in a row when it changed (`falhas_consecutivas`).
    public let consecutiveFailures: Int
    /// For a change to OPEN: how long it stays open before a probe.
    public let openFor: Duration?
    /// Whether this process decided it (as opposed to following another replica or an
    /// override). Only local OPEN transitions are broadcast, so broadcasts never echo.
    public let isLocal: Bool
    /// When it happened, by this process's monotonic clock.
    public let at: ContinuousClock.Instant

    public init(
        circuit: String,
        from: CircuitState,
        to: CircuitState,
        reason: String,
        consecutiveFailures: Int,
        openFor: Duration?,
        isLocal: Bool,
        at: ContinuousClock.Instant
    ) {
        self.circuit = circuit
        self.from = from
        self.to = to
        self.reason = reason
        self.consecutiveFailures = consecutiveFailures
        self.openFor = openFor
        self.isLocal = isLocal
        self.at = at
    }
}

/// How a breaker opens and recovers. Defaults follow the seed (T02.2): open after 5 counted
/// failures in a row; stay open 60 s, doubling after each failed probe up to 600 s, back to
/// 60 s after a successful one.
public struct CircuitBreakerPolicy: Sendable, Hashable {
    /// Opens when the failure rate over a recent window reaches `threshold` (0…1), once at
    /// least `minimumCalls` calls finished in that window.
    public struct FailureRate: Sendable, Hashable {
        public var threshold: Double
        public var window: Duration
        public var minimumCalls: Int

        public init(threshold: Double, window: Duration, minimumCalls: Int) {
            self.threshold = min(1, max(0.01, threshold))
            self.window = max(.seconds(1), window)
            self.minimumCalls = max(1, minimumCalls)
        }
    }

    /// Counted failures in a row that open the breaker.
    public var consecutiveFailures: Int
    /// An optional second rule; either one opens the breaker.
    public var failureRate: FailureRate?
    /// The first reset wait.
    public var initialResetWait: Duration
    /// Applied to the wait after each failed half-open probe.
    public var resetMultiplier: Double
    public var maximumResetWait: Duration
    /// Calls admitted while half-open; all must succeed to close it.
    public var halfOpenProbes: Int

    public init(
        consecutiveFailures: Int = 5,
        failureRate: FailureRate? = nil,
        initialResetWait: Duration = .seconds(60),
        resetMultiplier: Double = 2,
        maximumResetWait: Duration = .seconds(600),
        halfOpenProbes: Int = 1
    ) {
        self.consecutiveFailures = max(1, consecutiveFailures)
        self.failureRate = failureRate
        self.initialResetWait = max(.zero, initialResetWait)
        self.resetMultiplier = max(1, resetMultiplier)
        self.maximumResetWait = max(self.initialResetWait, maximumResetWait)
        self.halfOpenProbes = max(1, halfOpenProbes)
    }

    /// The reset wait after `failedProbes` failed half-open probes in a row:
    /// `initial × multiplier^failedProbes`, at most `maximum`.
    public func resetWait(afterFailedProbes failedProbes: Int) -> Duration {
        var seconds = initialResetWait.seconds
        var remaining = max(0, failedProbes)
        while remaining > 0 && seconds < maximumResetWait.seconds {
            seconds *= resetMultiplier
            remaining -= 1
        }
        return .seconds(min(seconds, maximumResetWait.seconds))
    }
}

