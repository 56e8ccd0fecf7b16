import Foundation
import Logging

/// The optional fast store: one Redis key per doctor per day, checked and incremented by a
/// Lua script so the check is atomic across every worker sharing the Redis server.
///
/// Consistency with Postgres: the two stores count separately. While Redis is up, only
/// Redis counts; when it fails, `RateLimiter` falls back to `rate_limit_counters`, which
/// knows nothing of what Redis admitted earlier that day; and a Redis restarted without
/// persistence forgets the day. So each switch between the stores can hand a doctor up to
/// one more budget that day: a day with one Redis outage allows at most twice the budget,
/// and every further outage or restart of Redis that day up to one budget more. (A check
/// whose Redis answer came too late is counted in Postgres, and given back in Redis when
/// that answer does come.) The window is computed from this
/// machine's clock (Postgres uses its own `now()`), so machines whose clocks disagree may
/// switch days a little apart. Without Redis there is one store and none of this.
public final class RedisRateLimitStore: Sendable {
    public let url: RedisURL
    private let holder: ConnectionHolder

    /// KEYS[1] counter; ARGV weight, limit, expire-at (unix seconds).
    /// Returns {1, used} when admitted, {0, used} when over budget.
    static let consumeScript = """
        local used = tonumber(redis.call('GET', KEYS[1]) or '0')
        local weight = tonumber(ARGV[1])
        if used + weight > tonumber(ARGV[2]) then return {0, used} end
        used = redis.call('INCRBY', KEYS[1], weight)
        redis.call('EXPIREAT', KEYS[1], ARGV[3])
        return {1, used}
        """

    /// KEYS[1] counter; ARGV weight. Never leaves the counter below zero.
    static let refundScript = """
        local used = tonumber(redis.call('GET', KEYS[1]) or '0')
        if used <= 0 then return 0 end
        local left = used - tonumber(ARGV[1])
        if left < 0 then left = 0 end
        redis.call('SET', KEYS[1], left, 'KEEPTTL')
        return left
        """

    public init(url: RedisURL, connectTimeout: Duration = .milliseconds(500)) {
        self.url = url
        self.holder = ConnectionHolder(url: url, connectTimeout: connectTimeout)
    }

    static func key(_ key: String, day: String) -> String {
        "fila:rate:\(day):\(key)"
    }

    public func consume(key: String, weight: Int, limit: Int, window: RateWindow) async throws -> (allowed: Bool, used: Int) {
        // Kept a day past the window, so an operator can still read yesterday's counts.
        let expireAt = Int(window.nextStart.timeIntervalSince1970) + 86_400
        let reply = try await holder.send([
            "EVAL", Self.consumeScript, "1", Self.key(key, day: window.day), String(weight), String(limit), String(expireAt),
        ])
        guard case .array(let items?) = reply, items.count == 2, let flag = items[0].int64, let used = items[1].int64 else {
            throw RedisError(.protocolError, "unexpected reply to the rate-limit script: \(reply)")
        }
        return (flag == 1, Int(used))
    }

    /// Gives back `weight` of `key`'s count for `day` (`2026-11-25`).
    public func refund(key: String, weight: Int, day: String) async throws {
        _ = try await holder.send(["EVAL", Self.refundScript, "1", Self.key(key, day: day), String(weight)])
    }

    /// Closes the connection (a new one is opened on the next call).
    public func close() async {
        await holder.close()
    }

    /// One shared connection (Redis pipelines concurrent commands on it), reopened when it
    /// drops; concurrent callers share a single connect attempt.
    private actor ConnectionHolder {
        let url: RedisURL
        let connectTimeout: Duration
        private var connection: RedisConnection?
        private var connecting: Task<RedisConnection, any Error>?

        init(url: RedisURL, connectTimeout: Duration) {
            self.url = url
            self.connectTimeout = connectTimeout
        }

        func send(_ arguments: [String]) async throws -> RESPValue {
            let connection = try await current()
            do {
                return try await connection.send(arguments)
            } catch let error as RedisError where error.code == .serverError {
                throw error
            } catch is CancellationError {
                // The caller gave up (its time limit passed): the connection is fine and its
                // reply, when it comes, goes to nobody. Others keep using it.
                throw CancellationError()
            } catch {
                // The connection is suspect: drop it so the next call reconnects.
                if self.connection === connection { self.connection = nil }
                await connection.close()
                throw error
            }
        }

        private func current() async throws -> RedisConnection {
            if let connection, connection.isActive { return connection }
            connection = nil
            if let connecting { return try await connecting.value }
            let task = Task { [url, connectTimeout] in
                try await RedisConnection.connect(to: url, connectTimeout: connectTimeout)
            }
            connecting = task
            defer { connecting = nil }
            let connection = try await task.value
            self.connection = connection
            return connection
        }

        func close() async {
            let connection = self.connection
            self.connection = nil
            await connection?.close()
        }
    }
}
