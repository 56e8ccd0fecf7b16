import Logging
import PostgresNIO
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
/// let budget = await settings.value(for: "rate_limit.daily_budget")?.integerValue ?? 3
/// ```
public final class AppSettings: Sendable {
    private struct State {
        var values: [String: JSONValue] = [:]
        var loadedAt: ContinuousClock.Instant?
        var loading: Task<Void, Never>?
        var failing = false
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

    /// Every setting, refreshed first when older than `refreshInterval`.
    public func values() async -> [String: JSONValue] {
        let now = ContinuousClock.now
        let (fresh, values, task) = state.withLock { state -> (Bool, [String: JSONValue], Task<Void, Never>?) in
            if let loadedAt = state.loadedAt, now - loadedAt < refreshInterval { return (true, state.values, nil) }
            if state.loading == nil {
                state.loading = Task { await self.load() }
            }
            return (false, state.values, state.loading)
        }
        if fresh { return values }
        await task?.value
        return state.withLock { $0.values }
    }

    public func value(for key: String) async -> JSONValue? {
        await values()[key]
    }

    /// Forgets the cached values, so the next read queries Postgres.
    public func invalidate() {
        state.withLock { $0.loadedAt = nil }
    }

    private func load() async {
        do {
            var loaded: [String: JSONValue] = [:]
            let rows = try await client.query("SELECT key, value::text FROM app_settings", logger: logger)
            for try await (key, text) in rows.decode((String, String).self) {
                loaded[key] = JSONValue(parsing: text)
            }
            let recovered = state.withLock { state -> Bool in
                defer { state.failing = false }
                state.values = loaded
                state.loadedAt = .now
                state.loading = nil
                return state.failing
            }
            if recovered { logger.info("app_settings read again") }
        } catch {
            let first = state.withLock { state -> Bool in
                defer { state.failing = true }
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

extension JSONValue {
    /// An integer, or a number with no fraction.
    public var integerValue: Int? {
        switch self {
        case .integer(let value): return value
        case .number(let value) where value == value.rounded() && abs(value) < 1e15: return Int(value)
        default: return nil
        }
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}
