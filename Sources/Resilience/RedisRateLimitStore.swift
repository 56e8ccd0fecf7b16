import Foundation
import Logging

/// The optional fast path: a copy, in Redis, of each doctor's count for the day, so that a
/// message over budget is refused without a write in Postgres.
///
/// Redis never admits anything: Postgres decides every admission (`PostgresRateLimitStore`)
/// and its new count is then copied here with the row's version (`versao`), and a copy
/// only replaces an older one, so copies that reach Redis out of order never roll a count
/// back. A count missing here (Redis restarted empty, a new day) is 0: Postgres decides. So
/// nothing Redis does (slow, paused, down, restarted without persistence) can let a doctor
/// receive more than the budget; the worst a stale copy can do is refuse a message that
/// would fit, when a refund's copy could not be written (Redis failing at that moment).
/// The day of a look-up comes from this machine's clock, the day of a copy from Postgres's
/// `now()`: machines whose clocks disagree may switch days a little apart.
public final class RedisRateLimitStore: Sendable {
    public let url: RedisURL
    private let holder: ConnectionHolder

    /// KEYS[1] copy (a hash: u = usado, v = versao); ARGV used, version, expire-at (unix
    /// seconds). Writes only a newer version; returns 1 when it did.
    static let copyScript = """
        local held = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
        if tonumber(ARGV[2]) <= held then return 0 end
        redis.call('HSET', KEYS[1], 'u', ARGV[1], 'v', ARGV[2])
        redis.call('EXPIREAT', KEYS[1], ARGV[3])
        return 1
        """

    public init(url: RedisURL, connectTimeout: Duration = .milliseconds(500)) {
        self.url = url
        self.holder = ConnectionHolder(url: url, connectTimeout: connectTimeout)
    }

    static func key(_ key: String, day: String) -> String {
        "fila:usado:\(day):\(key)"
    }

    /// The copy of `key`'s count for `day` (`2026-11-25`); 0 when there is none.
    public func used(key: String, day: String) async throws -> Int {
        let reply = try await holder.send(["HGET", Self.key(key, day: day), "u"])
        if reply.isNull { return 0 }
        guard let used = reply.int64, used >= 0 else {
            throw RedisError(.protocolError, "unexpected reply to HGET: \(reply)")
        }
        return Int(clamping: used)
    }

    /// Copies Postgres's count for `key` on `day` (`2026-11-25`), unless Redis holds a newer one.
    public func copy(key: String, day: String, used: Int, version: Int64) async throws {
        // Kept two days, so an operator can still read yesterday's copies.
        let expireAt = Int(Date().timeIntervalSince1970) + 2 * 86_400
        _ = try await holder.send([
            "EVAL", Self.copyScript, "1", Self.key(key, day: day), String(used), String(version), String(expireAt),
        ])
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
