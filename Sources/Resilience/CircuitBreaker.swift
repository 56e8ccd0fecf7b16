import Logging
import Synchronization

/// A named circuit breaker (evolution, zapi, slack …) shared by every task of a process.
///
/// ```swift
/// let receipt = try await breaker.execute { try await provider.sendText(to: phone, text: text, logger: logger) }
/// // throws CircuitOpenError at once, without calling, while the circuit is open
/// ```
///
/// Transitions go to `onTransition` (the registry queues them for `circuit_transitions`
/// and the broadcast); the caller never waits for, nor sees a failure of, that write.
public final class CircuitBreaker: Sendable {
    public let name: String
    public let classifier: ErrorClassifier
    private let machine: Mutex<CircuitBreakerStateMachine>
    private let onTransition: @Sendable (CircuitTransition) -> Void
    private let logger: Logger

    public init(
        name: String,
        policy: CircuitBreakerPolicy = .init(),
        classifier: ErrorClassifier = .standard,
        logger: Logger,
        onTransition: @escaping @Sendable (CircuitTransition) -> Void = { _ in }
    ) {
        self.name = name
        self.classifier = classifier
        self.machine = Mutex(CircuitBreakerStateMachine(circuit: name, policy: policy))
        self.logger = logger
        self.onTransition = onTransition
    }

    public var state: CircuitState { machine.withLock { $0.state } }
    public var consecutiveFailures: Int { machine.withLock { $0.consecutiveFailures } }
    public var policy: CircuitBreakerPolicy { machine.withLock { $0.policy } }

    /// Whether a call made now would go ahead (the worker asks before claiming).
    public func readiness() -> CircuitBreakerStateMachine.Readiness {
        let now = ContinuousClock.now
        return machine.withLock { $0.readiness(now: now) }
    }

    /// Runs `operation` if the breaker admits it, and records how it went. Rethrows the
    /// operation's error; throws `CircuitOpenError` without calling when it is not admitted.
    public func execute<Value>(_ operation: () async throws -> Value) async throws -> Value {
        let permission = change { machine in
            let (permission, transitions) = machine.acquire(now: .now)
            return (transitions, permission)
        }
        guard case .permitted(let ticket) = permission else {
            if case .rejected(let state, let retryAfter) = permission {
                throw CircuitOpenError(circuit: name, state: state, retryAfter: retryAfter)
            }
            fatalError("unreachable")
        }
        let value: Value
        do {
            value = try await operation()
        } catch {
            let type = classifier.classify(error)
            let result: CircuitBreakerStateMachine.CallResult
            switch type.classification {
            case .failure:
                result = .failure(detail: Self.detail(of: error))
            case .ignored:
                if type == .timeout {
                    logger.warning(
                        "call timed out; not counted toward opening the circuit",
                        metadata: ["circuit": .string(name), "error": .string(String(describing: error))]
                    )
                }
                result = .ignored
            }
            change { ($0.record(result, for: ticket, now: .now), ()) }
            throw error
        }
        change { ($0.record(.success, for: ticket, now: .now), ()) }
        return value
    }

    /// Another process opened this circuit (its broadcast arrived).
    public func followRemoteOpen(openFor: Duration, reason: String) {
        change { ($0.followRemoteOpen(openFor: openFor, reason: reason, now: .now), ()) }
    }

    /// Applies the override stored in `circuit_overrides`, or its absence.
    public func applyOverride(_ override: CircuitState?, reason: String) {
        change { ($0.applyOverride(override, reason: reason, now: .now), ()) }
    }

    /// Runs `body` on the state machine and hands its transitions on while still holding
    /// the lock, so they are queued for `circuit_transitions` in the order they happened;
    /// logging waits until the lock is released.
    @discardableResult
    private func change<Result>(_ body: (inout CircuitBreakerStateMachine) -> ([CircuitTransition], Result)) -> Result {
        let (transitions, result) = machine.withLock { machine -> ([CircuitTransition], Result) in
            let (transitions, result) = body(&machine)
            for transition in transitions { onTransition(transition) }
            return (transitions, result)
        }
        log(transitions)
        return result
    }

    private func log(_ transitions: [CircuitTransition]) {
        for transition in transitions {
            let metadata: Logger.Metadata = [
                "circuit": .string(name), "circuit.from": .string(transition.from.rawValue),
                "circuit.to": .string(transition.to.rawValue), "circuit.reason": .string(transition.reason),
            ]
            switch transition.to {
            case .open, .forcedOpen: logger.error("circuit opened", metadata: metadata)
            case .halfOpen: logger.warning("circuit half-open", metadata: metadata)
            case .closed, .forcedClosed: logger.notice("circuit closed", metadata: metadata)
            }
        }
    }

    /// A short description of a failure for the transition's reason.
    static func detail(of error: any Error) -> String {
        oneLine(String(describing: error), limit: 300)
    }

    /// `text` without control characters (Postgres refuses NUL in text), cut to `limit`.
    static func oneLine(_ text: String, limit: Int) -> String {
        let clean = String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.properties.generalCategory != .control }))
        return clean.count <= limit ? clean : String(clean.prefix(limit)) + "…"
    }
}

/// Thrown instead of calling while a circuit does not admit calls.
public struct CircuitOpenError: Error, Sendable, Hashable, CustomStringConvertible {
    public let circuit: String
    public let state: CircuitState
    /// When a call may be admitted again, as far as this process knows.
    public let retryAfter: Duration

    public var description: String {
        "circuit \(circuit) is \(state.rawValue): no call made (retry in \(format(retryAfter)))"
    }
}
