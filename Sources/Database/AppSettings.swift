import Logging
import PostgresNIO
import Primitives
import Synchronization

/// `app_settings` read through a short-lived cache: a value changed with psql takes effect
/// within `refreshInterval`, and callers on the hot path (every message's rate-limit check)
/// do not each pay a query.
///
/// When Postgres cannot be read the last values are kept (none at first, so callers fall
/// back to their defaults) and the failure is logged once.
///
/// ```swift
/// let settings = AppSettings(client: client, logger: logger)
/// let budget = await settings.values()["rate_limit.daily_budget"]?.integerValue ?? 3
/// ```
public final class AppSettings: Sendable {
    private struct State {
        var values: [String: JSONValue] = [:]
        var loadedAt: ContinuousClock.Instant?
        var loading: Task<Void, Never>?
        var failing = false
        /// Whether a load has ended (well or not): later reads never wait.
        var everLoaded = false
        /// Whether a load has succeeded.
        var succeeded = false
    }

    public let refreshInterval: Duration
    private let client: PostgresClient
    private let logger: Logger
    private let state = Mutex(State())

    public init(client: PostgresClient, refreshInterval: Duration = .seconds(30), logger: Logger) {
        self.client = client
        self.refreshInterval = refreshInterval
        self.logger = logger
    }

    /// Every setting. Values older than `refreshInterval` are returned as they are while a
    /// refresh runs in the background; only the very first read waits for Postgres (at
    /// most `loadTimeout`, then it gets no values and callers use their defaults).
    public func values() async -> [String: JSONValue] {
        let now = ContinuousClock.now
        let (values, firstLoad) = state.withLock { state -> ([String: JSONValue], Task<Void, Never>?) in
            let stale = state.loadedAt.map { now - $0 >= refreshInterval } ?? true
            if stale && state.loading == nil {
                state.loading = Task { await self.load() }
            }
            return (state.values, state.everLoaded ? nil : state.loading)
        }
        guard let firstLoad else { return values }
        await firstLoad.value
        return state.withLock { $0.values }
    }

    /// How long one read of the table may take.
    public static let loadTimeout: Duration = .seconds(5)

    /// `values()`, or nil while no read of the table has ever succeeded (callers that must
    /// not act on defaults an operator may have overridden can wait).
    public func readValues() async -> [String: JSONValue]? {
        let values = await values()
        return state.withLock { $0.succeeded } ? values : nil
    }

    private func load() async {
        do {
            let loaded = try await withTimeLimit(Self.loadTimeout, onTimeout: {
                DatabaseError(.queryFailed, "reading app_settings: no answer within \(Self.loadTimeout)")
            }) { [client, logger] in
                var loaded: [String: JSONValue] = [:]
                let rows = try await client.query("SELECT key, value::text FROM app_settings", logger: logger)
                for try await (key, text) in rows.decode((String, String).self) {
                    loaded[key] = JSONValue(parsing: text)
                }
                return loaded
            }
            let recovered = state.withLock { state -> Bool in
                defer {
                    state.failing = false
                    state.everLoaded = true
                    state.succeeded = true
                }
                state.values = loaded
                state.loadedAt = .now
                state.loading = nil
                return state.failing
            }
            if recovered { logger.info("app_settings read again") }
        } catch {
            let first = state.withLock { state -> Bool in
                defer {
                    state.failing = true
                    state.everLoaded = true
                }
                // Try again on the next read after a short pause, not on every call.
                state.loadedAt = ContinuousClock.now - refreshInterval + .seconds(5)
                state.loading = nil
                return !state.failing
            }
            if first {
                logger.error("cannot read app_settings; using the last values read (or defaults)", metadata: ["error": .string(String(reflecting: error))])
            }
        }
    }
}
