import Logging
import Synchronization

/// The process's circuit breakers, by name. Their transitions go to `transitions` (written
/// to `circuit_transitions` by `CircuitBreakerSync`), and the manual overrides reach them
/// through `overrides`.
public final class CircuitBreakerRegistry: Sendable {
    public let defaultPolicy: CircuitBreakerPolicy
    /// Every transition of these breakers, until it is written.
    public let transitions = CircuitTransitionLog()
    /// The manual overrides, as last read.
    public let overrides = CircuitOverrides()
    private let logger: Logger
    private let breakers = Mutex<[String: CircuitBreaker]>([:])

    public init(defaultPolicy: CircuitBreakerPolicy = .init(), logger: Logger) {
        self.defaultPolicy = defaultPolicy
        self.logger = logger
    }

    /// The breaker named `name`, created with `policy` (or the default) on first use.
    public func breaker(named name: String, policy: CircuitBreakerPolicy? = nil, classifier: ErrorClassifier = .standard) -> CircuitBreaker {
        // The name goes into circuit_transitions, whose CHECK would refuse every batch
        // holding a bad one: names come from code, so a bad one is a programming error.
        precondition(Self.isValidName(name), "a circuit name is 1-100 of a-z 0-9 _ . - starting with a letter or digit, not '\(name)'")
        return breakers.withLock { breakers in
            if let existing = breakers[name] { return existing }
            let breaker = CircuitBreaker(
                name: name, policy: policy ?? defaultPolicy, classifier: classifier, logger: logger,
                onTransition: { [transitions] transition in transitions.append(transition) }
            )
            breakers[name] = breaker
            return breaker
        }
    }

    /// Whether `name` is a valid circuit name (as `circuit_transitions.circuit_name` checks).
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 100 else { return false }
        func allowed(_ byte: UInt8, first: Bool) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
            case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"): return !first
            default: return false
            }
        }
        return allowed(first, first: true) && name.utf8.dropFirst().allSatisfy { allowed($0, first: false) }
    }

    /// The breaker named `name` if this process has one.
    public func existing(named name: String) -> CircuitBreaker? {
        breakers.withLock { $0[name] }
    }

    public var all: [CircuitBreaker] {
        breakers.withLock { Array($0.values) }.sorted { $0.name < $1.name }
    }

    /// Whether the overrides in `circuit_overrides` were read once (by `CircuitBreakerSync`).
    /// Until then a sender should not call: a breaker held open by hand must not see a
    /// burst of calls from a worker that just started.
    public var overridesLoaded: Bool { overrides.loaded }
}
