import Database
import Logging
import PostgresNIO
import Primitives
import Synchronization

/// The manual overrides of `circuit_overrides` (`ops.force_circuit`), as this process last
/// read them, applied to its breakers.
///
/// Reloads may overlap (a notification and the poll at once) and finish in any order: the
/// one that read the table later wins. Until the first read, a sender should not call
/// (`loaded`): a breaker held open by hand must not see a burst of calls from a worker that
/// just started.
public final class CircuitOverrides: Sendable {
    /// Orders reloads: `started` tickets handed out, `applied` the newest applied.
    private let reloads = Mutex((started: 0, applied: 0))
    private let read = Atomic<Bool>(false)

    public init() {}

    /// Whether the overrides were read once (or could not be, and sending went on without).
    public var loaded: Bool { read.load(ordering: .acquiring) }

    /// Reads the live overrides and applies them (or their absence) to `breakers()`, the
    /// breakers as they are when the read ends. On a database error the breakers keep what
    /// they have.
    func reload(into breakers: @Sendable () -> [CircuitBreaker], client: PostgresClient, logger: Logger) async {
        let ticket = reloads.withLock { state in
            state.started += 1
            return state.started
        }
        do {
            let overrides = try await withTimeLimit(.seconds(10), onTimeout: { DatabaseError(.queryFailed, "reading circuit overrides: no answer within 10 s") }) {
                try await CircuitReport.overrides(client: client, logger: logger)
            }
            var byName: [String: CircuitOverride] = [:]
            for override in overrides { byName[override.circuit] = override }
            reloads.withLock { state in
                guard ticket > state.applied else { return }
                state.applied = ticket
                for breaker in breakers() {
                    if let override = byName[breaker.name] {
                        breaker.applyOverride(override.state, reason: "\(override.reason) (set by \(override.setBy))")
                    } else {
                        breaker.applyOverride(nil, reason: "")
                    }
                }
            }
            read.store(true, ordering: .releasing)
        } catch {
            if !loaded {
                // Claims cannot work either while Postgres is unreadable; do not hold the
                // worker back on this alone once it is back.
                logger.warning("reading circuit overrides failed; sending without them until they can be read", metadata: ["error": .string(String(reflecting: error))])
                read.store(true, ordering: .releasing)
            } else {
                logger.debug("reading circuit overrides failed", metadata: ["error": .string(String(reflecting: error))])
            }
        }
    }
}
