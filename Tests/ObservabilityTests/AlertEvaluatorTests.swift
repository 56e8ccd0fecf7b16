import Database
import FilaTestSupport
import Foundation
import Logging
import Observability
import PostgresNIO
import Primitives
import Synchronization
import Testing

private let logger = TestDatabase.logger

/// The evaluator every process runs: rules reported to the store with their settings read
/// afresh, the interval from app_settings, and the dead man's switch pinged only after a
/// round in which every rule was evaluated.
@Suite("Alert evaluator", .migratedDatabase, .timeLimit(.minutes(2)))
struct AlertEvaluatorTests {
    /// Whether the test's condition holds.
    final class Condition: Sendable {
        private let state: Mutex<Bool>
        init(_ holds: Bool) { state = Mutex(holds) }
        var holds: Bool {
            get { state.withLock { $0 } }
            set { state.withLock { $0 = newValue } }
        }
    }

    /// A rule that fires while `condition` holds, with the limit its settings say.
    private func rule(_ condition: Condition) -> AlertRule {
        AlertRule(name: "teste_regra", cooldown: .seconds(3600)) { settings, _ in
            let limit = settings.integer("limit", default: 5, in: 0...100)
            return condition.holds ? [Alert(rule: "teste_regra", title: "acima de \(limit)", text: "teste")] : []
        }
    }

    @Test func aRuleFiresOnceWithinItsCooldownAndResolves() async throws {
        let client = try TestDatabase.current.client
        let firing = Condition(true)
        let evaluator = AlertEvaluator(client: client, rules: [rule(firing)], logger: logger)
        try await client.query("INSERT INTO app_settings (key, value) VALUES ('alert.teste_regra.limit', '7')", logger: logger)
        let first = await evaluator.evaluate()
        #expect(first.evaluated == ["teste_regra"])
        #expect(first.queued.map { $0.title } == ["acima de 7"])
        #expect(await evaluator.evaluate().queued.isEmpty)
        // The cooldown from app_settings: 10 minutes, and the last notification 11 minutes
        // back (in the row): a reminder.
        try await client.query("INSERT INTO app_settings (key, value) VALUES ('alert.teste_regra.cooldown_seconds', '600')", logger: logger)
        try await client.query("UPDATE alert_state SET last_notified_at = now() - interval '11 minutes'", logger: logger)
        #expect(await evaluator.evaluate().queued.map { $0.kind } == [.firing])
        // It clears: a flap, until it has stayed clear for `resolve_after_seconds` (120).
        firing.holds = false
        #expect(await evaluator.evaluate().queued.isEmpty)
        // It comes back within it: the same episode, nobody is told again.
        firing.holds = true
        #expect(await evaluator.evaluate().queued.isEmpty)
        firing.holds = false
        try await client.query("UPDATE alert_state SET last_seen_at = last_seen_at - interval '3 minutes'", logger: logger)
        #expect(await evaluator.evaluate().queued.map { $0.kind } == [.resolved])
        // resolve_after_seconds 0: resolved at the first clear evaluation.
        try await client.query("INSERT INTO app_settings (key, value) VALUES ('alert.teste_regra.resolve_after_seconds', '0')", logger: logger)
        firing.holds = true
        #expect(await evaluator.evaluate().queued.map { $0.kind } == [.firing])
        firing.holds = false
        #expect(await evaluator.evaluate().queued.map { $0.kind } == [.resolved])
    }

    @Test func theDeadmanSwitchIsPingedAfterHealthyRoundsOnly() async throws {
        let client = try TestDatabase.current.client
        let pings = Mutex<[String]>([])
        let server = try await FakeHTTPServer.start { request in
            pings.withLock { $0.append("\(request.method) \(request.path)") }
            return FakeResponse(status: 200, contentType: "text/plain", body: "OK")
        }
        let url = try #require(SecretURL("\(server.baseURL)/ping/2f9c-secret"))
        #expect(!String(describing: url).contains("2f9c-secret"))
        let deadman = DeadmanSwitch(url: url)
        let healthy = AlertEvaluator(client: client, rules: [rule(Condition(false))], deadman: deadman, logger: logger)
        let round = await healthy.evaluate()
        #expect(round.isHealthy && round.deadmanPinged)
        #expect(pings.withLock { $0 } == ["GET /ping/2f9c-secret"])

        // A rule the database cannot evaluate: the deployment cannot vouch for itself.
        let broken = AlertRule(name: "quebrada", cooldown: .seconds(60)) { _, _ in
            try await client.query("SELECT * FROM tabela_que_nao_existe", logger: logger)
            return []
        }
        let unhealthy = AlertEvaluator(client: client, rules: [broken], deadman: deadman, logger: logger)
        let failed = await unhealthy.evaluate()
        #expect(!failed.isHealthy && !failed.deadmanPinged)
        #expect(pings.withLock { $0.count } == 1)

        // The switch's service down: the round goes on, the ping reports failure.
        server.outage = true
        #expect(await healthy.evaluate().deadmanPinged == false)
        server.outage = false
        try await deadman.shutdown()
        await server.shutdown()
    }
}
