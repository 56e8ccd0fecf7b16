import Foundation
import Logging
import Observability
import Primitives
import Testing

private let logger = Logger(label: "test")

private struct Boom: Error, CustomStringConvertible {
    var description: String { "password=hunter2 at db.internal" }
}

private func check(_ name: String, _ status: HealthStatus, timeLimit: Duration = HealthCheck.defaultTimeLimit) -> HealthCheck {
    HealthCheck(component: name, measurement: "probe", timeLimit: timeLimit) { HealthObservation(status: status) }
}

@Suite("Health checks and their runner")
struct HealthRunnerTests {
    @Test(arguments: [
        ([HealthStatus.pass, .pass], HealthStatus.pass, 200),
        ([.pass, .warn], .warn, 200),
        ([.warn, .fail, .pass], .fail, 503),
        ([], .pass, 200),
    ])
    func theReportTakesTheWorstStatus(statuses: [HealthStatus], expected: HealthStatus, code: Int) async {
        let checks = statuses.enumerated().map { check("c\($0.offset)", $0.element) }
        let report = await HealthRunner.run(checks, logger: logger)
        #expect(report.status == expected)
        #expect(report.httpStatusCode == code)
        #expect(report.checks.keys.sorted() == checks.map(\.key).sorted())
    }

    /// A check that never returns is reported failed after its limit, and the others still
    /// report: the whole run ends near the limit, not when the hung call ends.
    @Test(.timeLimit(.minutes(1)))
    func aHungCheckFailsWithinItsLimitAndTheRestStillReport() async throws {
        let hung = HealthCheck(component: "hung", measurement: "probe", timeLimit: .milliseconds(300)) {
            // Ignores cancellation, as a call stuck on a wedged connection does.
            await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
            return HealthObservation(status: .pass)
        }
        let start = ContinuousClock.now
        let report = await HealthRunner.run([hung, check("fine", .pass)], logger: logger)
        let elapsed = ContinuousClock.now - start
        // The hung call never returns, so any answer proves it was abandoned; 0.3 s alone,
        // and the margin is for a machine loaded by the whole suite.
        #expect(elapsed < .seconds(5))
        #expect(report.status == .fail)
        #expect(report.checks["hung:probe"]?.first?.status == .fail)
        #expect(report.checks["hung:probe"]?.first?.observation.output == "timed out after 300 ms")
        #expect(report.checks["fine:probe"]?.first?.status == .pass)
    }

    /// The body is public: a thrown error's text (which may name a host or a password) stays
    /// in the log.
    @Test func aThrownErrorFailsWithoutItsText() async throws {
        let failing = HealthCheck(component: "db", measurement: "probe") { () throws -> HealthObservation in throw Boom() }
        let report = await HealthRunner.run([failing], logger: logger)
        let body = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(report.status == .fail)
        #expect(!body.contains("hunter2"))
        #expect(!body.contains("db.internal"))
    }

    @Test func theBodyFollowsTheHealthJSONDraft() async throws {
        let observed = HealthCheck(component: "fila", measurement: "backlog", componentType: .component) {
            HealthObservation(status: .warn, observedValue: 72, observedUnit: "messages", output: "backed up", details: ["pendentes": 72, "status": "overridden?"])
        }
        let report = await HealthRunner.run([observed, check("postgres", .pass)], logger: logger)
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let json = try #require(JSONSerialization.jsonObject(with: encoder.encode(report)) as? [String: Any])
        #expect(json["status"] as? String == "warn")
        #expect(json["output"] as? String == "not passing: fila:backlog")
        let entries = try #require((json["checks"] as? [String: Any])?["fila:backlog"] as? [[String: Any]])
        #expect(entries.count == 1)
        let entry = try #require(entries.first)
        #expect(entry["componentType"] as? String == "component")
        #expect(entry["observedValue"] as? Int == 72)
        #expect(entry["observedUnit"] as? String == "messages")
        // A custom key never replaces the draft's own.
        #expect(entry["status"] as? String == "warn")
        #expect(entry["output"] as? String == "backed up")
        #expect(entry["pendentes"] as? Int == 72)
        let time = try #require(entry["time"] as? String)
        #expect(ISO8601DateFormatter().date(from: time) != nil)
        // Omitted on pass, as the draft asks.
        let passing = await HealthRunner.run([check("postgres", .pass)], logger: logger)
        let passingJSON = try #require(JSONSerialization.jsonObject(with: encoder.encode(passing)) as? [String: Any])
        #expect(passingJSON["output"] == nil)
        #expect(passingJSON["status"] as? String == "pass")
    }

    @Test func theKubernetesTextForm() async {
        let passing = await HealthRunner.run([check("postgres", .pass), check("redis", .warn)], logger: logger)
        #expect(passing.kubernetesText(endpoint: "readyz", verbose: false) == "ok")
        #expect(passing.kubernetesText(endpoint: "readyz", verbose: true) == "[+]postgres ok\n[+]redis ok\nreadyz check passed\n")
        let failing = await HealthRunner.run([check("postgres", .fail), check("redis", .pass)], logger: logger)
        // A failure is always verbose, with the reason withheld.
        #expect(failing.kubernetesText(endpoint: "readyz", verbose: false) == "[-]postgres failed: reason withheld\n[+]redis ok\nreadyz check failed\n")
        let live = HealthReport(checks: [:])
        #expect(live.kubernetesText(endpoint: "livez", verbose: true, passingName: "ping") == "[+]ping ok\nlivez check passed\n")
    }
}

@Suite("Health scores")
struct HealthScoreTests {
    @Test(arguments: [(100, HealthScore.Band.healthy), (80, .healthy), (79, .degraded), (50, .degraded), (49, .unhealthy), (0, .unhealthy)])
    func bands(value: Int, band: HealthScore.Band) {
        #expect(HealthScore(value).band == band)
    }

    @Test func statusesScoreAndValuesAreClamped() {
        #expect(HealthScore(.pass).value == 100)
        #expect(HealthScore(.warn).value == 50)
        #expect(HealthScore(.fail).value == 0)
        #expect(HealthScore(140).value == 100)
        #expect(HealthScore(-3).value == 0)
    }

    @Test func theMeanAndTheOverallCap() {
        #expect(HealthScore.mean([]).value == 100)
        #expect(HealthScore.mean([HealthScore(100), HealthScore(50)]).value == 75)
        // Five healthy parts and a dead one: the mean alone would say "healthy" (83).
        let components = [100, 100, 100, 100, 100, 0].map(HealthScore.init)
        #expect(HealthScore.mean(components).value == 83)
        #expect(HealthScore.overall(components).value == 49)
        #expect(HealthScore.overall(components).band == .unhealthy)
        // Degraded parts lower the mean but do not cap it.
        #expect(HealthScore.overall([100, 100, 50, 50].map(HealthScore.init)).value == 75)
    }
}
