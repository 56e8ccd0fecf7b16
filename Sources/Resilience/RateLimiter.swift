import Database
import Foundation
import Logging
import Primitives
import Synchronization

/// Per-doctor daily budgets (seed T04.1–T04.4).
///
/// Each check spends the message kind's weight from the doctor's budget for the current
/// calendar day, or says how long until the next window. Postgres decides every admission,
/// so no doctor is ever admitted more than the budget, whatever Redis does. Redis, when
/// configured, holds a copy of each count and refuses a message over budget without a
/// write in Postgres; any Redis error or a reply slower than `redisTimeout` just skips that
/// look-up, so callers never see a Redis failure. The outage is logged once, shown by
/// `redisHealth`, and Redis is tried again after `redisRetryInterval` (then at growing,
/// jittered intervals up to ten times that). See `RedisRateLimitStore`.
///
/// ```swift
/// let decision = try await limiter.consume(key: message.clienteID, kind: message.tipo.rawValue, logger: logger)
/// if case .limited(let retryAfter) = decision.verdict { /* defer the message */ }
/// ```
public final class RateLimiter: Sendable {
    /// Where a decision was made.
    public enum Store: String, Sendable, Hashable {
        /// Postgres counted it (every admission, and refusals Redis did not see coming).
        case postgres
        /// Refused by Redis's copy of the count, without asking Postgres.
        case redis
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
        /// The policy's spread for deferring a limited message past the window's start.
        public let deferralSpread: Duration

        public var isAllowed: Bool { verdict == .allowed }
    }

    public enum RedisHealth: Sendable, Hashable {
        case notConfigured
        case up
        /// Failing since `since`; checks go to Postgres.
        case down(since: Date, error: String)
    }

    public let postgres: PostgresRateLimitStore
    public let redis: RedisRateLimitStore?
    public let redisTimeout: Duration
    /// The first wait before trying a failed Redis again; later waits grow (decorrelated
    /// jitter) up to ten times this.
    public let redisRetryInterval: Duration
    /// How long a Postgres check or refund may take.
    public let postgresTimeout: Duration
    private let defaults: RateLimitPolicy
    private let settings: AppSettings?
    private let logger: Logger
    /// Whether to ask Redis now, and the outage if there is one; the decisions are the
    /// state machine's, the calls and the logging this type's.
    private let redisOutage: Mutex<RedisOutageStateMachine>
    private let reportedProblems = Mutex<Set<String>>([])

    public init(
        postgres: PostgresRateLimitStore,
        redis: RedisRateLimitStore? = nil,
        policy: RateLimitPolicy = .init(),
        settings: AppSettings? = nil,
        redisTimeout: Duration = .milliseconds(50),
        redisRetryInterval: Duration = .seconds(2),
        postgresTimeout: Duration = .seconds(5),
        logger: Logger
    ) {
        self.postgres = postgres
        self.redis = redis
        self.defaults = policy
        self.settings = settings
        self.redisTimeout = redisTimeout
        self.redisRetryInterval = redisRetryInterval
        self.postgresTimeout = postgresTimeout
        self.logger = logger
        self.redisOutage = Mutex(RedisOutageStateMachine(retryInterval: redisRetryInterval))
    }

    /// The policy in force: the defaults with `app_settings` applied. Until `app_settings`
    /// could be read once, checks fail (and messages wait) rather than count against budgets
    /// an operator may have changed.
    public func policy() async throws -> RateLimitPolicy {
        guard let settings else { return defaults }
        guard let values = await settings.readValues() else {
            throw DatabaseError(.queryFailed, "app_settings could not be read yet; rate limits are unknown")
        }
        let (policy, problems) = defaults.applying(values)
        for problem in problems where reportedProblems.withLock({ $0.insert(problem).inserted }) {
            logger.error("ignoring an invalid rate-limit setting in app_settings", metadata: ["problem": .string(problem)])
        }
        return policy
    }

    public var redisHealth: RedisHealth {
        guard redis != nil else { return .notConfigured }
        return redisOutage.withLock { $0.health }
    }

    /// Spends `kind`'s weight from `key`'s budget for today, if it fits. Throws only when
    /// Postgres cannot answer either (within `postgresTimeout`).
    public func consume(key: String, kind: String, logger: Logger) async throws -> Decision {
        let policy = try await policy()
        let weight = policy.weight(for: kind)
        let budget = policy.dailyBudget
        if weight == 0 {
            return Decision(verdict: .allowed, key: key, weight: 0, used: 0, budget: budget, store: .none, window: "", deferralSpread: policy.deferralSpread)
        }
        let redis = self.redis.flatMap { shouldTryRedis() ? $0 : nil }
        if let redis {
            // Every path out of this block reports to the outage tracking, which also ends
            // a probe of a Redis that was down.
            do {
                guard let window = RateWindow.containing(Date(), timeZone: policy.timeZone) else {
                    throw RedisError(.protocolError, "no calendar day for time zone \(policy.timeZone)")
                }
                // A read: an answer that comes too late changes nothing.
                let used = try await withRedisTimeLimit { try await redis.used(key: key, day: window.day) }
                markRedisUp()
                if used + weight > budget {
                    return Decision(
                        verdict: .limited(retryAfter: .seconds(max(0, window.nextStart.timeIntervalSinceNow))),
                        key: key, weight: weight, used: used, budget: budget, store: .redis, window: window.day,
                        deferralSpread: policy.deferralSpread
                    )
                }
            } catch is CancellationError {
                endRedisProbe()
                throw CancellationError()
            } catch {
                await markRedisDown(error)
            }
        }
        let timeout = postgresTimeout
        // A check the caller stopped waiting for (time limit, cancellation) may still
        // commit: then its weight is given back.
        let result = try await withTimeLimit(
            timeout,
            onTimeout: { DatabaseError(.queryFailed, "rate-limit check: no answer from Postgres within \(timeout)") },
            whenAbandoned: { [postgres] late in
                guard late.allowed else { return }
                _ = try? await postgres.refund(key: key, weight: weight, window: late.window, logger: logger)
            }
        ) { [postgres] in
            try await postgres.consume(key: key, weight: weight, limit: budget, timeZone: policy.timeZone, logger: logger)
        }
        if result.version > 0 {
            await copyToRedis(key: key, day: result.window, used: result.used, version: result.version)
        }
        return Decision(
            verdict: result.allowed ? .allowed : .limited(retryAfter: result.untilNextWindow),
            key: key, weight: weight, used: result.used, budget: budget, store: .postgres, window: result.window,
            deferralSpread: policy.deferralSpread
        )
    }

    /// A Redis call that gives up after `redisTimeout`.
    private func withRedisTimeLimit<Result: Sendable>(_ operation: @escaping @Sendable () async throws -> Result) async throws -> Result {
        let timeout = redisTimeout
        return try await withTimeLimit(timeout, onTimeout: { RedisError(.timeout, "no answer from Redis within \(timeout)") }, operation)
    }

    /// Copies Postgres's count to Redis, when Redis is configured and up. Best effort: a
    /// failure only marks Redis down (the copy is a shortcut, never the record).
    private func copyToRedis(key: String, day: String, used: Int, version: Int64) async {
        guard let redis, redisOutage.withLock({ !$0.isDown }) else { return }
        do {
            try await withRedisTimeLimit { try await redis.copy(key: key, day: day, used: used, version: version) }
        } catch is CancellationError {
            return
        } catch {
            await markRedisDown(error)
        }
    }

    /// Gives back an allowed decision's weight: the message was not sent after all. Best
    /// effort: a failure is logged, never thrown. Redis's copy follows the new count.
    public func refund(_ decision: Decision, logger: Logger) async {
        guard decision.isAllowed, decision.weight > 0, decision.store == .postgres else { return }
        do {
            let timeout = postgresTimeout
            let count = try await withTimeLimit(
                timeout,
                onTimeout: { DatabaseError(.queryFailed, "rate-limit refund: no answer from Postgres within \(timeout)") }
            ) { [postgres] in
                try await postgres.refund(key: decision.key, weight: decision.weight, window: decision.window, logger: logger)
            }
            if let count {
                await copyToRedis(key: decision.key, day: decision.window, used: count.used, version: count.version)
            }
        } catch {
            logger.warning("rate-limit refund failed; the doctor's budget stays spent", metadata: ["error": .string(String(reflecting: error))])
        }
    }

    // MARK: - Redis outage tracking

    /// Up: always. Down: one caller at a time, when the retry delay has passed.
    private func shouldTryRedis() -> Bool {
        let now = ContinuousClock.now
        return redisOutage.withLock { $0.admit(now: now) }.asksRedis
    }

    /// A probe that ended without an answer either way (cancelled).
    private func endRedisProbe() {
        redisOutage.withLock { $0.probeEnded() }
    }

    private func markRedisUp() {
        let now = ContinuousClock.now
        if case .recovered(let downFor) = redisOutage.withLock({ $0.recordSuccess(now: now) }) {
            logger.notice(
                "Redis answers again; rate limits use it again",
                metadata: ["redis.url": .string(redis?.url.description ?? ""), "redis.down_seconds": .stringConvertible(Int(downFor.seconds))]
            )
        }
    }

    private func markRedisDown(_ error: any Error) async {
        let description = String(describing: error)
        let now = ContinuousClock.now
        let date = Date()
        let failure = redisOutage.withLock { outage in
            var generator = SystemRandomNumberGenerator()
            return outage.recordFailure(description, now: now, date: date, using: &generator)
        }
        // A connection that let a reply time out may be dead without knowing it (a peer
        // gone without a reset): the next try opens a new one.
        if let redis, let redisError = error as? RedisError, redisError.code == .timeout {
            await redis.close()
        }
        if case .wentDown = failure {
            logger.error(
                "Redis failed; rate limits fall back to Postgres until it answers again",
                metadata: ["redis.url": .string(redis?.url.description ?? ""), "error": .string(description)]
            )
        }
    }
}
