import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Primitives
import Synchronization
import Testing
@testable import Resilience

/// Per-doctor daily budgets on Postgres, and on Redis with the fallback, against real servers.
@Suite struct RateLimiterTests {
    /// A limiter; Redis gets a generous timeout unless a test is about timeouts, since the
    /// whole suite runs in parallel on two cores.
    func makeLimiter(
        _ client: PostgresClient,
        redis: RedisRateLimitStore? = nil,
        settings: AppSettings? = nil,
        timeout: Duration = .seconds(30),
        retry: Duration = .milliseconds(100)
    ) -> RateLimiter {
        // Postgres too gets a minute: the suite's start on two cores can hold a query for seconds.
        RateLimiter(
            postgres: PostgresRateLimitStore(client: client), redis: redis, settings: settings,
            redisTimeout: timeout, redisRetryInterval: retry, postgresTimeout: .seconds(60), logger: TestDatabase.logger
        )
    }

    func used(_ client: PostgresClient, _ key: String) async throws -> Int? {
        for try await value in try await client.query(
            "SELECT usado FROM rate_limit_counters WHERE cliente_id = \(key) AND janela = (now() AT TIME ZONE 'America/Sao_Paulo')::date",
            logger: TestDatabase.logger
        ).decode(Int32.self) { return Int(value) }
        return nil
    }

    @Test(.migratedDatabase) func weightsSpendTheDailyBudget() async throws {
        let client = try TestDatabase.current.client
        let limiter = makeLimiter(client)
        let campaign = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
        #expect(campaign.isAllowed && campaign.used == 2 && campaign.weight == 2 && campaign.store == .postgres)
        // A second campaign would make 4 > 3.
        let second = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
        #expect(!second.isAllowed)
        #expect(second.used == 2)
        // A follow-up (1) still fits, then nothing else does …
        let followUp = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
        #expect(followUp.isAllowed)
        let system = try await limiter.consume(key: "medico-1", kind: "sistema", logger: TestDatabase.logger)
        #expect(!system.isAllowed)
        // … except replies, which weigh nothing and write nothing.
        for _ in 0..<5 {
            let reply = try await limiter.consume(key: "medico-1", kind: "resposta", logger: TestDatabase.logger)
            #expect(reply.isAllowed && reply.store == RateLimiter.Store.none)
        }
        #expect(try await used(client, "medico-1") == 3)
        let otherReply = try await limiter.consume(key: "medico-2", kind: "resposta", logger: TestDatabase.logger)
        #expect(otherReply.isAllowed)
        #expect(try await used(client, "medico-2") == nil)
        // Another doctor has a budget of their own.
        let otherCampaign = try await limiter.consume(key: "medico-2", kind: "campanha", logger: TestDatabase.logger)
        #expect(otherCampaign.isAllowed)
    }

    /// A limited check says how long until the next calendar day in São Paulo begins.
    @Test(.migratedDatabase) func overBudgetWaitsForTheNextWindow() async throws {
        let client = try TestDatabase.current.client
        let limiter = makeLimiter(client)
        for _ in 0..<3 { _ = try await limiter.consume(key: "medico-9", kind: "followup", logger: TestDatabase.logger) }
        let limited = try await limiter.consume(key: "medico-9", kind: "followup", logger: TestDatabase.logger)
        guard case .limited(let retryAfter) = limited.verdict else {
            Issue.record("the fourth follow-up should be limited")
            return
        }
        let window = try #require(RateWindow.containing(Date(), timeZone: "America/Sao_Paulo"))
        let expected = window.nextStart.timeIntervalSinceNow
        #expect(abs(retryAfter.seconds - expected) < 5, "\(retryAfter) vs \(expected) s")
        #expect(limited.window == window.day)
    }

    @Test(.migratedDatabase(maximumConnections: 16)) func eightConcurrentWorkersNeverExceedABudget() async throws {
        let client = try TestDatabase.current.client
        let doctors = (0..<25).map { "medico-\($0)" }
        let kinds = ["campanha", "followup", "sistema", "followup"]
        // 8 workers, each with its own limiter, each trying 40 sends per doctor.
        let admitted = try await withThrowingTaskGroup(of: [String: Int].self) { group in
            for worker in 0..<8 {
                let limiter = makeLimiter(client)
                group.addTask {
                    var spent: [String: Int] = [:]
                    for round in 0..<40 {
                        let doctor = doctors[(round + worker) % doctors.count]
                        let decision = try await limiter.consume(key: doctor, kind: kinds[(round + worker) % kinds.count], logger: TestDatabase.logger)
                        if decision.isAllowed { spent[doctor, default: 0] += decision.weight }
                    }
                    return spent
                }
            }
            var total: [String: Int] = [:]
            for try await spent in group { total.merge(spent, uniquingKeysWith: +) }
            return total
        }
        for doctor in doctors {
            let spent = admitted[doctor] ?? 0
            #expect(spent <= 3, "\(doctor) received weight \(spent)")
            #expect(try await used(client, doctor) == spent)
        }
        // The budgets were actually contended, not trivially met.
        #expect(admitted.values.reduce(0, +) >= 2 * doctors.count)
    }

    @Test(.migratedDatabase) func settingsChangeTheBudgetAndWeights() async throws {
        let client = try TestDatabase.current.client
        let settings = AppSettings(client: client, refreshInterval: .milliseconds(1), logger: TestDatabase.logger)
        let limiter = makeLimiter(client, settings: settings)
        try await client.query(
            """
            INSERT INTO app_settings (key, value) VALUES
                ('rate_limit.daily_budget', '5'),
                ('rate_limit.weights', '{"campanha": 5, "resposta": 1}')
            """,
            logger: TestDatabase.logger
        )
        let policy = try await limiter.policy()
        #expect(policy.dailyBudget == 5)
        #expect(policy.weight(for: "campanha") == 5)
        #expect(policy.weight(for: "resposta") == 1)
        #expect(policy.weight(for: "followup") == 1)
        let big = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
        #expect(big.used == 5)
        let reply = try await limiter.consume(key: "medico-1", kind: "resposta", logger: TestDatabase.logger)
        #expect(!reply.isAllowed)

        // A malformed value is ignored, not half-applied.
        try await client.query(
            "UPDATE app_settings SET value = '\"lots\"' WHERE key = 'rate_limit.daily_budget'",
            logger: TestDatabase.logger
        )
        // Read again in the background (stale values serve meanwhile).
        var budget = 5
        for _ in 0..<200 where budget != 3 {
            try await Task.sleep(for: .milliseconds(20))
            budget = try await limiter.policy().dailyBudget
        }
        #expect(budget == 3)
    }

    /// Until app_settings could be read once, checks fail (the sender defers) rather than
    /// count against budgets an operator may have changed.
    @Test(.migratedDatabase) func unreadableSettingsMeanNoCheck() async throws {
        let client = try TestDatabase.current.client
        try await client.query("ALTER TABLE app_settings RENAME TO app_settings_away", logger: TestDatabase.logger)
        let limiter = makeLimiter(client, settings: AppSettings(client: client, refreshInterval: .milliseconds(1), logger: TestDatabase.logger))
        await #expect(throws: (any Error).self) { () async throws in
            _ = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
        }
        #expect(try await used(client, "medico-1") == nil)
        try await client.query("ALTER TABLE app_settings_away RENAME TO app_settings", logger: TestDatabase.logger)
        var allowed = false
        for _ in 0..<400 where !allowed {
            try await Task.sleep(for: .milliseconds(25))
            allowed = (try? await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger))?.isAllowed ?? false
        }
        #expect(allowed)
    }

    @Test func policyValidation() {
        let (policy, problems) = RateLimitPolicy().applying([
            "rate_limit.daily_budget": .integer(-1),
            "rate_limit.weights": .object(["campanha": .string("two")]),
            "rate_limit.time_zone": .string("Mars/Olympus"),
            "rate_limit.deferral_spread_seconds": .integer(60),
        ])
        #expect(policy.dailyBudget == 3)
        #expect(policy.weight(for: "campanha") == 2)
        #expect(policy.timeZone == "America/Sao_Paulo")
        #expect(policy.deferralSpread == .seconds(60))
        #expect(problems.count == 3)
        #expect(RateWindow.containing(Date(timeIntervalSince1970: 1_764_038_000), timeZone: "America/Sao_Paulo")?.day == "2025-11-24")
    }

    @Test(.migratedDatabase) func aRefundGivesTheWeightBack() async throws {
        let client = try TestDatabase.current.client
        let limiter = makeLimiter(client)
        let decision = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
        await limiter.refund(decision, logger: TestDatabase.logger)
        #expect(try await used(client, "medico-1") == 0)
        // Refunds never go below zero.
        await limiter.refund(decision, logger: TestDatabase.logger)
        #expect(try await used(client, "medico-1") == 0)
        let after = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
        #expect(after.used == 1)
    }

    // MARK: - Redis

    /// Postgres decides every admission; Redis holds a copy of each count, refuses what does
    /// not fit it without a write in Postgres, and never takes an older copy over a newer.
    @Test(.migratedDatabase(maximumConnections: 16), .timeLimit(.minutes(3))) func postgresDecidesAndRedisRefusesFromItsCopy() async throws {
        try await TestRedis.with { redis in
            let client = try TestDatabase.current.client
            let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
            let limiter = makeLimiter(client, redis: store)
            let admin = try await RedisConnection.connect(to: try RedisURL(redis.url), connectTimeout: .seconds(20))
            func copy(_ decision: RateLimiter.Decision) async throws -> [String] {
                let reply = try await admin.send(["HMGET", RedisRateLimitStore.key(decision.key, day: decision.window), "u", "v"])
                guard case .array(let items?) = reply else { return [] }
                return items.map { $0.string ?? "nil" }
            }
            func version(_ key: String) async throws -> Int64? {
                for try await value in try await client.query(
                    "SELECT versao FROM rate_limit_counters WHERE cliente_id = \(key)", logger: TestDatabase.logger
                ).decode(Int64.self) { return value }
                return nil
            }

            let first = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
            #expect(first.store == .postgres && first.isAllowed && first.used == 2)
            #expect(limiter.redisHealth == .up)
            #expect(try await used(client, "medico-1") == 2)
            #expect(try await copy(first) == ["2", "1"])

            // Over budget by the copy: refused without touching Postgres.
            let second = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
            #expect(second.store == .redis && !second.isAllowed && second.used == 2)
            #expect(try await version("medico-1") == 1)

            // What fits the copy is decided by Postgres, and the copy follows.
            let third = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
            #expect(third.store == .postgres && third.isAllowed && third.used == 3)
            #expect(try await copy(third) == ["3", "2"])
            await limiter.refund(third, logger: TestDatabase.logger)
            #expect(try await used(client, "medico-1") == 2)
            #expect(try await copy(third) == ["2", "3"])
            // A copy that arrives late (an older version) changes nothing.
            try await store.copy(key: "medico-1", day: third.window, used: 0, version: 2)
            #expect(try await copy(third) == ["2", "3"])
            await admin.close()

            // 8 workers with limiters of their own over one Redis never exceed a budget.
            let doctors = (0..<10).map { "doutora-\($0)" }
            let spent = try await withThrowingTaskGroup(of: [String: Int].self) { group in
                for worker in 0..<8 {
                    let limiter = makeLimiter(client, redis: RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5)))
                    group.addTask {
                        var spent: [String: Int] = [:]
                        for round in 0..<30 {
                            let doctor = doctors[(round + worker) % doctors.count]
                            let decision = try await limiter.consume(key: doctor, kind: "followup", logger: TestDatabase.logger)
                            if decision.isAllowed { spent[doctor, default: 0] += 1 }
                        }
                        return spent
                    }
                }
                var total: [String: Int] = [:]
                for try await part in group { total.merge(part, uniquingKeysWith: +) }
                return total
            }
            #expect(doctors.allSatisfy { spent[$0] == 3 }, "\(spent)")
            await store.close()
        }
    }

    /// T04.4: Redis stopped mid-run → the Postgres path carries on with no error to the
    /// caller; restarted → Redis is used again.
    @Test(.migratedDatabase, .timeLimit(.minutes(3))) func redisOutageFallsBackToPostgresAndRecovers() async throws {
        try await TestRedis.with { redis in
            let client = try TestDatabase.current.client
            let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
            let limiter = makeLimiter(client, redis: store, retry: .milliseconds(200))
            let before = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
            #expect(before.isAllowed && limiter.redisHealth == .up)

            await redis.stop()
            for index in 0..<5 {
                let decision = try await limiter.consume(key: "medico-\(index + 2)", kind: "followup", logger: TestDatabase.logger)
                #expect(decision.store == .postgres)
                #expect(decision.isAllowed)
            }
            guard case .down(_, let error) = limiter.redisHealth else {
                Issue.record("health should show Redis down, not \(limiter.redisHealth)")
                return
            }
            #expect(!error.isEmpty)
            #expect(try await used(client, "medico-2") == 1)

            try await redis.start()
            for _ in 0..<100 where limiter.redisHealth != .up {
                try await Task.sleep(for: .milliseconds(50))
                _ = try await limiter.consume(key: "medico-20", kind: "followup", logger: TestDatabase.logger)
            }
            #expect(limiter.redisHealth == .up)
            // Restarted empty: the copies come back from Postgres's counts.
            for _ in 0..<2 { _ = try await limiter.consume(key: "medico-2", kind: "followup", logger: TestDatabase.logger) }
            let refused = try await limiter.consume(key: "medico-2", kind: "followup", logger: TestDatabase.logger)
            #expect(refused.store == .redis && !refused.isAllowed && refused.used == 3)
            await store.close()
        }
    }

    /// A Redis that answers too slowly counts as down for that call.
    @Test(.migratedDatabase, .timeLimit(.minutes(3))) func aSlowRedisFallsBackWithinTheCall() async throws {
        try await TestRedis.with { redis in
            let client = try TestDatabase.current.client
            let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
            // Connected and answering first (a patient limiter on the same store) …
            let patient = makeLimiter(client, redis: store)
            let warm = try await patient.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
            #expect(warm.isAllowed && patient.redisHealth == .up)
            let limiter = makeLimiter(client, redis: store, timeout: .milliseconds(300))
            // Every client of this server is held for a second.
            let admin = try await RedisConnection.connect(to: try RedisURL(redis.url), connectTimeout: .seconds(20))
            _ = try await admin.send(["CLIENT", "PAUSE", "3000", "ALL"])
            // … then held: the check falls back within the call, with no error.
            let decision = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
            #expect(decision.store == .postgres)
            #expect(decision.isAllowed)
            guard case .down(_, let error) = limiter.redisHealth else {
                Issue.record("health should show Redis down, not \(limiter.redisHealth)")
                return
            }
            #expect(error.contains("no answer from Redis within"))
            await admin.close()
            await store.close()
        }
    }

    /// The guarantee: whatever Redis does (slow, paused, killed, restarted empty), no doctor
    /// is admitted more than the budget in a day, and no budget is lost. 300 doctors, three
    /// campaign messages each (weight 2, budget 3: one campaign a day), checked by 8 limiters
    /// of their own at once, with Redis paused for 1.5 s mid-run, then killed and restarted
    /// empty.
    @Test(.migratedDatabase(maximumConnections: 16), .timeLimit(.minutes(3))) func redisPausedAndRestartedMidRunNeverExceedsABudget() async throws {
        try await TestRedis.with { redis in
            let client = try TestDatabase.current.client
            let doctors = (0..<300).map { "medico-\($0)" }
            // Each doctor's three messages, spread over the limiters and the run.
            let checks = (doctors + doctors + doctors).shuffled()
            let limiters = try (0..<8).map { _ in
                makeLimiter(client, redis: RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(1)), timeout: .milliseconds(50))
            }
            let admin = try await RedisConnection.connect(to: try RedisURL(redis.url), connectTimeout: .seconds(20))
            let progress = CheckCounter()
            let admitted = try await withThrowingTaskGroup(of: [String: Int].self) { group in
                for (index, limiter) in limiters.enumerated() {
                    group.addTask {
                        var admitted: [String: Int] = [:]
                        for doctor in stride(from: index, to: checks.count, by: limiters.count).map({ checks[$0] }) {
                            var decision: RateLimiter.Decision?
                            // A check with neither store answering is retried, as the
                            // worker defers the message and tries again.
                            while decision == nil {
                                decision = try? await limiter.consume(key: doctor, kind: "campanha", logger: TestDatabase.logger)
                            }
                            if decision!.isAllowed { admitted[doctor, default: 0] += 1 }
                            progress.add()
                        }
                        return admitted
                    }
                }
                group.addTask {
                    func reached(_ count: Int) async throws {
                        while progress.value < count { try await Task.sleep(for: .milliseconds(5)) }
                    }
                    try await reached(checks.count / 4)
                    _ = try await admin.send(["CLIENT", "PAUSE", "1500", "ALL"])
                    try await reached(checks.count / 2)
                    await redis.stop()
                    try await redis.start()
                    return [:]
                }
                var total: [String: Int] = [:]
                for try await part in group { total.merge(part, uniquingKeysWith: +) }
                return total
            }
            await admin.close()
            let over = doctors.filter { admitted[$0, default: 0] > 1 }
            let none = doctors.filter { admitted[$0, default: 0] == 0 }
            #expect(over.isEmpty, "\(over.count) doctors admitted more than one campaign")
            #expect(none.isEmpty, "\(none.count) doctors lost their budget")
            for doctor in doctors.prefix(20) { #expect(try await used(client, doctor) == 2) }
        }
    }
}

/// Checks done so far, across the tasks of a test.
final class CheckCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
