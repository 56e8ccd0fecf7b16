import Database
import Foundation
import Logging
import Queue
import Synchronization

/// Per-doctor daily budgets (seed T04.1–T04.4).
///
/// Each check spends the message kind's weight from the doctor's budget for the current
/// calendar day, or says how long until the next window. Redis is used first when
/// configured; any Redis error or a reply slower than `redisTimeout` falls back to Postgres
/// within the same call, so callers never see a Redis failure. The outage is logged once,
/// shown by `redisHealth`, and Redis is tried again every `redisRetryInterval`. See
/// `RedisRateLimitStore` for what the two stores' separate counts mean for consistency.
///
/// ```swift
/// let decision = try await limiter.consume(key: message.clienteID, kind: message.tipo.rawValue, logger: logger)
/// if case .limited(let retryAfter) = decision.verdict { /* defer the message */ }
/// ```
public final class RateLimiter: Sendable {
    /// Where a decision was made.
    public enum Store: String, Sendable, Hashable {
        case postgres, redis
        /// Weight 0 (or limiting switched off): nothing was counted.
        case none
    }

    public struct Decision: Sendable, Hashable {
        public enum Verdict: Sendable, Hashable {
            case allowed
            /// Over budget: the next window starts after `retryAfter`.
            case limited(retryAfter: Duration)
        }

        public let verdict: Verdict
        public let key: String
        public let weight: Int
        public let used: Int
        public let budget: Int
        public let store: Store
        /// The window's day (`2026-11-25`), for a refund.
        public let window: String

        public var isAllowed: Bool { verdict == .allowed }
    }

    public enum RedisHealth: Sendable, Hashable {
        case notConfigured
        case up
        /// Failing since `since`; checks go to Postgres.
        case down(since: Date, error: String)
    }

    private struct RedisState {
        var down = false
        var since = Date()
        var lastError = ""
        var nextAttempt = ContinuousClock.now
        var probing = false
    }

    public let postgres: PostgresRateLimitStore
    public let redis: RedisRateLimitStore?
    public let redisTimeout: Duration
    public let redisRetryInterval: Duration
    private let defaults: RateLimitPolicy
    private let settings: AppSettings?
    private let logger: Logger
    private let redisState = Mutex(RedisState())
    private let reportedProblems = Mutex<Set<String>>([])

    public init(
        postgres: PostgresRateLimitStore,
        redis: RedisRateLimitStore? = nil,
        policy: RateLimitPolicy = .init(),
        settings: AppSettings? = nil,
        redisTimeout: Duration = .milliseconds(50),
        redisRetryInterval: Duration = .seconds(2),
        logger: Logger
    ) {
        self.postgres = postgres
        self.redis = redis
        self.defaults = policy
        self.settings = settings
        self.redisTimeout = redisTimeout
        self.redisRetryInterval = redisRetryInterval
        self.logger = logger
    }

    /// The policy in force: the defaults with `app_settings` applied.
    public func policy() async -> RateLimitPolicy {
        guard let settings else { return defaults }
        let (policy, problems) = defaults.applying(await settings.values())
        for problem in problems where reportedProblems.withLock({ $0.insert(problem).inserted }) {
            logger.error("ignoring an invalid rate-limit setting in app_settings", metadata: ["problem": .string(problem)])
        }
        return policy
    }

    public var redisHealth: RedisHealth {
        guard redis != nil else { return .notConfigured }
        return redisState.withLock { $0.down ? .down(since: $0.since, error: $0.lastError) : .up }
    }

    /// Spends `kind`'s weight from `key`'s budget for today, if it fits. Throws only when
    /// Postgres cannot be reached either.
    public func consume(key: String, kind: String, logger: Logger) async throws -> Decision {
        let policy = await policy()
        let weight = policy.weight(for: kind)
        let budget = policy.dailyBudget
        if weight == 0 {
            return Decision(verdict: .allowed, key: key, weight: 0, used: 0, budget: budget, store: .none, window: "")
        }
        if let redis, shouldTryRedis(), let window = RateWindow.containing(Date(), timeZone: policy.timeZone) {
            do {
                let timeout = redisTimeout
                let (allowed, used) = try await withTimeLimit(timeout, onTimeout: { RedisError(.timeout, "no answer from Redis within \(timeout)") }) {
                    try await redis.consume(key: key, weight: weight, limit: budget, window: window)
                }
                markRedisUp()
                let verdict: Decision.Verdict = allowed
                    ? .allowed
                    : .limited(retryAfter: .seconds(max(0, window.nextStart.timeIntervalSinceNow)))
                return Decision(verdict: verdict, key: key, weight: weight, used: used, budget: budget, store: .redis, window: window.day)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                markRedisDown(error)
            }
        }
        let result = try await postgres.consume(key: key, weight: weight, limit: budget, timeZone: policy.timeZone, logger: logger)
        return Decision(
            verdict: result.allowed ? .allowed : .limited(retryAfter: result.untilNextWindow),
            key: key, weight: weight, used: result.used, budget: budget, store: .postgres, window: result.window
        )
    }

    /// Gives back an allowed decision's weight: the message was not sent after all (no
    /// provider could take it). Best effort: a failure is logged, never thrown.
    public func refund(_ decision: Decision, logger: Logger) async {
        guard decision.isAllowed, decision.weight > 0 else { return }
        do {
            switch decision.store {
            case .none:
                return
            case .postgres:
                try await postgres.refund(key: decision.key, weight: decision.weight, window: decision.window, logger: logger)
            case .redis:
                guard let redis else { return }
                let policy = await policy()
                guard let window = RateWindow.containing(Date(), timeZone: policy.timeZone), window.day == decision.window else { return }
                let timeout = redisTimeout
                try await withTimeLimit(timeout, onTimeout: { RedisError(.timeout, "no answer from Redis within \(timeout)") }) {
                    try await redis.refund(key: decision.key, weight: decision.weight, window: window)
                }
            }
        } catch {
            logger.warning("rate-limit refund failed; the doctor's budget stays spent", metadata: ["error": .string(String(reflecting: error))])
        }
    }

    // MARK: - Redis outage tracking

    /// Up: always. Down: one caller at a time, every `redisRetryInterval`.
    private func shouldTryRedis() -> Bool {
        let now = ContinuousClock.now
        return redisState.withLock { state in
            guard state.down else { return true }
            guard !state.probing, now >= state.nextAttempt else { return false }
            state.probing = true
            return true
        }
    }

    private func markRedisUp() {
        let (wasDown, since) = redisState.withLock { state -> (Bool, Date) in
            defer {
                state.down = false
                state.probing = false
            }
            return (state.down, state.since)
        }
        if wasDown {
            logger.notice(
                "Redis answers again; rate limits use it again",
                metadata: ["redis.url": .string(redis?.url.description ?? ""), "redis.down_seconds": .stringConvertible(Int(-since.timeIntervalSinceNow))]
            )
        }
    }

    private func markRedisDown(_ error: any Error) {
        let retry = redisRetryInterval
        let description = String(describing: error)
        let first = redisState.withLock { state -> Bool in
            defer {
                state.down = true
                state.probing = false
                state.lastError = description
                state.nextAttempt = .now + retry
            }
            if !state.down { state.since = Date() }
            return !state.down
        }
        if first {
            logger.error(
                "Redis failed; rate limits fall back to Postgres until it answers again",
                metadata: ["redis.url": .string(redis?.url.description ?? ""), "error": .string(description)]
            )
        }
    }
}
