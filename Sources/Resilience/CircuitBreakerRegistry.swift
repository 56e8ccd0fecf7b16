import Logging
import Primitives
import Synchronization

/// The process's circuit breakers, by name, and the transitions they have not yet written
/// to `circuit_transitions` (`CircuitBreakerSync` writes them and relays other replicas'
/// openings and the manual overrides).
public final class CircuitBreakerRegistry: Sendable {
    /// The most transitions kept while Postgres is away; older ones are dropped (and the
    /// drop is logged), since a flapping breaker must not grow memory without bound.
    public static let pendingLimit = 10_000

    public let defaultPolicy: CircuitBreakerPolicy
    private let logger: Logger
    private let breakers = Mutex<[String: CircuitBreaker]>([:])
    private let pending = Mutex(PendingTransitions())
    private let overridesRead = Atomic<Bool>(false)
    let written = WakeSignal()

    struct PendingTransitions {
        var items: [CircuitTransition] = []
        var dropped = 0
    }

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
                onTransition: { [weak self] transition in self?.enqueue(transition) }
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

    /// Orders override reloads: one that read the table later wins, whatever order they
    /// finish in.
    private let overrideReloads = Mutex((started: 0, applied: 0))

    /// The database clock at a monotonic instant, for timing transition rows.
    let clockAnchor = Mutex<(epoch: Double, instant: ContinuousClock.Instant)?>(nil)

    func beginOverrideReload() -> Int {
        overrideReloads.withLock { state in
            state.started += 1
            return state.started
        }
    }

    /// Runs `apply` unless a reload that began later was applied already.
    func finishOverrideReload(_ ticket: Int, _ apply: () -> Void) {
        overrideReloads.withLock { state in
            guard ticket > state.applied else { return }
            state.applied = ticket
            apply()
        }
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
    public var overridesLoaded: Bool { overridesRead.load(ordering: .acquiring) }

    func markOverridesLoaded() { overridesRead.store(true, ordering: .releasing) }

    // MARK: - Transitions waiting to be written

    private func enqueue(_ transition: CircuitTransition) {
        pending.withLock { pending in
            pending.items.append(transition)
            if pending.items.count > Self.pendingLimit {
                pending.items.removeFirst(pending.items.count - Self.pendingLimit)
                pending.dropped += 1
            }
        }
        written.signal()
    }

    /// Takes every queued transition (and how many were dropped since the last call).
    func takePending() -> (items: [CircuitTransition], dropped: Int) {
        pending.withLock { pending in
            defer { pending = PendingTransitions() }
            return (pending.items, pending.dropped)
        }
    }

    /// Puts back transitions whose write failed, ahead of any queued since.
    func restore(_ items: [CircuitTransition]) {
        pending.withLock { pending in
            pending.items.insert(contentsOf: items, at: 0)
            if pending.items.count > Self.pendingLimit {
                let excess = pending.items.count - Self.pendingLimit
                pending.items.removeFirst(excess)
                pending.dropped += excess
            }
        }
    }

    var pendingCount: Int { pending.withLock { $0.items.count } }
}
