import AsyncHTTPClient
import Database
import Foundation
import Logging
import Resilience
import Synchronization

/// The process's view of `chips`: the list selection works from, cached for `cacheDuration`
/// (seed T05.1) and dropped at once when `invalidate()` is called (`ChipRosterSync` does on
/// every `fila_chips` notification), each chip with its provider and its own breaker.
///
/// An empty roster means the table has no chip in service: the sender then uses the providers
/// of its environment, as before chips existed.
public final class ChipRoster: Sendable {
    /// A chip with what sends through it.
    public struct Entry: Sendable {
        public let chip: Chip
        public let route: WhatsAppSender.Route
    }

    public struct Snapshot: Sendable {
        /// Every chip not retired whose credentials this process has, default first.
        public let entries: [Entry]

        public var isEmpty: Bool { entries.isEmpty }
    }

    public let store: ChipStore
    public let registry: CircuitBreakerRegistry
    public let cacheDuration: Duration
    private let makeProvider: @Sendable (Chip) throws -> any WhatsAppProvider
    private let logger: Logger
    private let state = Mutex(State())
    private let reportedProblems = Mutex<Set<String>>([])

    private struct State {
        var snapshot: Snapshot?
        var loadedAt: ContinuousClock.Instant?
        /// Bumped by `invalidate()`, so a load that began before a change is not kept as fresh.
        var generation = 0
    }

    /// - Parameter makeProvider: builds a chip's provider, resolving its credentials; throws
    ///   when they are missing, and the chip is left out in this process (logged once).
    public init(
        store: ChipStore,
        registry: CircuitBreakerRegistry,
        cacheDuration: Duration = .seconds(60),
        makeProvider: @escaping @Sendable (Chip) throws -> any WhatsAppProvider,
        logger: Logger
    ) {
        self.store = store
        self.registry = registry
        self.cacheDuration = cacheDuration
        self.makeProvider = makeProvider
        self.logger = logger
    }

    /// Forgets the cached list: the next look-up reads the table.
    public func invalidate() {
        state.withLock { state in
            state.generation += 1
            state.loadedAt = nil
        }
    }

    /// The cached list, whatever its age (nil before the first read).
    public var cached: Snapshot? { state.withLock { $0.snapshot } }

    /// The list, read again when older than `cacheDuration` or invalidated. When the read
    /// fails, the last list is used (logged); with none, the error is thrown.
    public func snapshot(logger: Logger) async throws -> Snapshot {
        let now = ContinuousClock.now
        let (fresh, generation) = state.withLock { state -> (Snapshot?, Int) in
            if let snapshot = state.snapshot, let loadedAt = state.loadedAt, now - loadedAt < cacheDuration {
                return (snapshot, state.generation)
            }
            return (nil, state.generation)
        }
        if let fresh { return fresh }
        do {
            let chips = try await store.chips(logger: logger)
            let snapshot = Snapshot(entries: chips.compactMap(entry(for:)))
            state.withLock { state in
                state.snapshot = snapshot
                // A change announced while reading: keep the list, but read again next time.
                state.loadedAt = state.generation == generation ? now : nil
            }
            return snapshot
        } catch {
            if let stale = state.withLock({ $0.snapshot }) {
                logger.warning(
                    "reading the chips failed; selecting from the last list read",
                    metadata: ["error": .string(String(reflecting: error))]
                )
                return stale
            }
            throw error
        }
    }

    private func entry(for chip: Chip) -> Entry? {
        do {
            let provider = try makeProvider(chip)
            return Entry(chip: chip, route: .init(provider: provider, breaker: registry.breaker(named: chip.circuitName)))
        } catch {
            let problem = "\(chip.id): \(error)"
            if reportedProblems.withLock({ $0.insert(problem).inserted }) {
                logger.error(
                    "chip left out: its provider cannot be built in this process",
                    metadata: ["chip.id": .string(chip.id), "error": .string(String(describing: error))]
                )
            }
            return nil
        }
    }
}

/// Builds a chip's provider from its row and the process's environment, where the secrets are.
public struct ChipProviderFactory: Sendable {
    public struct MissingCredential: Error, CustomStringConvertible {
        public let variable: String
        public var description: String { "environment variable \(variable) is not set" }
    }

    let httpClient: HTTPClient
    let environment: [String: String]
    let timeout: Duration

    public init(httpClient: HTTPClient, environment: [String: String] = ProcessInfo.processInfo.environment, timeout: Duration) {
        self.httpClient = httpClient
        self.environment = environment
        self.timeout = timeout
    }

    public func provider(for chip: Chip) throws -> any WhatsAppProvider {
        func secret(_ variable: String) throws -> String {
            guard let value = environment[variable], !value.isEmpty else { throw MissingCredential(variable: variable) }
            return value
        }
        switch chip.provider {
        case .evolution:
            return EvolutionProvider(
                configuration: .init(baseURL: chip.baseURL ?? "", apiKey: try secret(chip.credentialEnv), instance: chip.instance, timeout: timeout),
                httpClient: httpClient
            )
        case .zapi:
            return ZAPIProvider(
                configuration: .init(
                    baseURL: chip.baseURL ?? "https://api.z-api.io", instanceID: chip.instance, token: try secret(chip.credentialEnv),
                    clientToken: try secret(chip.clientTokenEnv ?? ""), timeout: timeout
                ),
                httpClient: httpClient
            )
        }
    }
}
