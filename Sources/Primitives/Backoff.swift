/// Randomised delays, so that many workers retrying at once spread out instead of
/// stampeding (seed T04.3). Every delay in Fila goes through here.
public enum Jitter: Sendable, Hashable {
    /// Uniform in [0, delay] ("full jitter").
    case full
    /// Uniform in [delay × (1 − fraction), delay]: keeps most of the delay.
    case proportional(Double)
    /// No randomness (tests, fixed schedules).
    case none

    /// `delay` with this jitter applied, never negative and never above `delay`.
    public func apply(to delay: Duration, using generator: inout some RandomNumberGenerator) -> Duration {
        let seconds = max(0, delay.seconds)
        switch self {
        case .none:
            return .seconds(seconds)
        case .full:
            return .seconds(Double.random(in: 0...seconds, using: &generator))
        case .proportional(let fraction):
            let fraction = min(1, max(0, fraction))
            return .seconds(Double.random(in: (seconds * (1 - fraction))...seconds, using: &generator))
        }
    }

    public func apply(to delay: Duration) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return apply(to: delay, using: &generator)
    }
}

/// Exponential backoff with a cap: `base × multiplier^(attempt − 1)`, at most `maximum`,
/// then jittered.
public struct Backoff: Sendable, Hashable {
    public var base: Duration
    public var multiplier: Double
    public var maximum: Duration
    public var jitter: Jitter

    /// Retry schedule for failed sends: about 30 s, 1 min, 2 min … capped at 30 min, each
    /// kept within its last 20 % so the order of attempts stays predictable.
    public static let messageRetry = Backoff(base: .seconds(30), multiplier: 2, maximum: .seconds(1800), jitter: .proportional(0.2))

    public init(base: Duration, multiplier: Double, maximum: Duration, jitter: Jitter) {
        self.base = base
        self.multiplier = multiplier
        self.maximum = maximum
        self.jitter = jitter
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    public func delay(forAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let raw = base.seconds * power(multiplier, exponent)
        let capped = raw.isFinite ? min(raw, maximum.seconds) : maximum.seconds
        return jitter.apply(to: .seconds(capped), using: &generator)
    }

    public func delay(forAttempt attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(forAttempt: attempt, using: &generator)
    }

    /// "Decorrelated jitter": the next delay is uniform in [base, previous × 3], capped at
    /// `maximum` (and never below `base`). Each delay depends on the last one rather than on
    /// the attempt number, so retriers that started together drift apart quickly. Pass
    /// `nil` for the first delay. `jitter` is not applied on top.
    public func decorrelatedDelay(after previous: Duration?, using generator: inout some RandomNumberGenerator) -> Duration {
        let low = min(base.seconds, maximum.seconds)
        let high = min(maximum.seconds, max(low, (previous ?? base).seconds * 3))
        return .seconds(high > low ? Double.random(in: low...high, using: &generator) : low)
    }

    public func decorrelatedDelay(after previous: Duration?) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return decorrelatedDelay(after: previous, using: &generator)
    }
}

private func power(_ base: Double, _ exponent: Double) -> Double {
    var result = 1.0
    var remaining = Int(exponent)
    while remaining > 0 && result.isFinite {
        result *= base
        remaining -= 1
    }
    return result
}
