import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
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
        timeout: Duration = .seconds(5),
        retry: Duration = .milliseconds(100)
    ) -> RateLimiter {
        RateLimiter(
            postgres: PostgresRateLimitStore(client: client), redis: redis, settings: settings,
            redisTimeout: timeout, redisRetryInterval: retry, logger: TestDatabase.logger
        )
    }

    func used(_ client: PostgresClient, _ key: String) async throws -> Int? {
        for try await value in try await client.query(
            "SELECT usado FROM rate_limit_counters WHERE cliente_id = \(key) AND janela = (now() AT TIME ZONE 'America/Sao_Paulo')::date",
            logger: TestDatabase.logger
        ).decode(Int32.self) { return Int(value) }
        return nil
    }

    @Test func weightsSpendTheDailyBudget() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url) { client in
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
        }
    }

    /// A limited check says how long until the next calendar day in São Paulo begins.
    @Test func overBudgetWaitsForTheNextWindow() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url) { client in
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
        }
    }

    @Test func eightConcurrentWorkersNeverExceedABudget() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url, maximumConnections: 16) { client in
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
        }
    }

    @Test func settingsChangeTheBudgetAndWeights() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url) { client in
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
        }
    }

    /// Until app_settings could be read once, checks fail (the sender defers) rather than
    /// count against budgets an operator may have changed.
    @Test func unreadableSettingsMeanNoCheck() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url) { client in
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
        }
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

    @Test func aRefundGivesTheWeightBack() async throws {
        try await TestDatabase.withMigrated { url in
            try await TestDatabase.withClient(url) { client in
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
        }
    }

    // MARK: - Redis

    @Test func redisIsUsedFirstAndShares() async throws {
        try await TestRedis.with { redis in
            try await TestDatabase.withMigrated { url in
                try await TestDatabase.withClient(url, maximumConnections: 16) { client in
                    let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
                    let limiter = makeLimiter(client, redis: store)
                    let first = try await limiter.consume(key: "medico-1", kind: "campanha", logger: TestDatabase.logger)
                    #expect(first.store == .redis && first.isAllowed && first.used == 2)
                    #expect(limiter.redisHealth == .up)
                    // Postgres was not touched.
                    #expect(try await used(client, "medico-1") == nil)

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
                                    #expect(decision.store == .redis)
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
        }
    }

    /// T04.4: Redis stopped mid-run → the Postgres path carries on with no error to the
    /// caller; restarted → Redis is used again.
    @Test func redisOutageFallsBackToPostgresAndRecovers() async throws {
        try await TestRedis.with { redis in
            try await TestDatabase.withMigrated { url in
                try await TestDatabase.withClient(url) { client in
                    let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
                    let limiter = makeLimiter(client, redis: store, retry: .milliseconds(200))
                    let before = try await limiter.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
                    #expect(before.store == .redis)

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
                    var seen: RateLimiter.Store = .postgres
                    for _ in 0..<100 where seen != .redis {
                        try await Task.sleep(for: .milliseconds(50))
                        seen = try await limiter.consume(key: "medico-20", kind: "resposta2", logger: TestDatabase.logger).store
                    }
                    #expect(seen == .redis)
                    #expect(limiter.redisHealth == .up)
                    await store.close()
                }
            }
        }
    }

    /// A Redis that answers too slowly counts as down for that call.
    @Test func aSlowRedisFallsBackWithinTheCall() async throws {
        try await TestRedis.with { redis in
            try await TestDatabase.withMigrated { url in
                try await TestDatabase.withClient(url) { client in
                    let store = RedisRateLimitStore(url: try RedisURL(redis.url), connectTimeout: .seconds(5))
                    // Connected and answering first (a patient limiter on the same store) …
                    let patient = makeLimiter(client, redis: store)
                    let warm = try await patient.consume(key: "medico-1", kind: "followup", logger: TestDatabase.logger)
                    #expect(warm.store == .redis)
                    let limiter = makeLimiter(client, redis: store, timeout: .milliseconds(300))
                    // Every client of this server is held for a second.
                    let admin = try await RedisConnection.connect(to: try RedisURL(redis.url), connectTimeout: .seconds(2))
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
        }
    }
}
