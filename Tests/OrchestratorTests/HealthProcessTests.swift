import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The health endpoints as `fila all` and `fila serve` serve them: the wiring, and a real
/// worker's heartbeat proving its claim loop turns.
@Suite("Health endpoints of a running fila", .migratedDatabase, .serialized, .timeLimit(.minutes(2)))
struct HealthProcessTests {
    private func start(_ command: String, _ url: DatabaseURL, _ extra: [String: String] = [:]) async throws -> (RunningFila, Int) {
        let fila = try FilaProcess.start([command], environment: [
            "DATABASE_URL": url.connectionString, "FILA_SENDER": "sandbox", "HOST": "127.0.0.1", "PORT": "0",
        ].merging(extra) { _, new in new })
        return (fila, try await fila.listeningPort())
    }

    private func get(_ port: Int, _ path: String) async throws -> (Int, [String: Any]) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        let json = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] ?? [:]
        return (Int(response.status.code), json)
    }

    /// Whether `/health/ready` answers 200 within `seconds`, asked every 100 ms.
    private func readyAgain(_ port: Int, seconds: Int) async throws -> Bool {
        for _ in 0..<(seconds * 10) {
            if try await get(port, "/health/ready").0 == 200 { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    private func processes(_ body: [String: Any]) -> [[String: Any]] {
        (body["checks"] as? [String: Any])?["worker:processes"] as? [[String: Any]] ?? []
    }

    @Test func allServesAHealthyWorkerWhoseClaimLoopTurns() async throws {
        let (fila, port) = try await start("all", try TestDatabase.current.url)
        var answer: (Int, [String: Any]) = (0, [:])
        // The first beat may come just after the listener is up.
        for _ in 0..<200 {
            answer = try await get(port, "/health/worker")
            if answer.0 == 200 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(answer.0 == 200)
        let process = try #require(processes(answer.1).first)
        #expect(process["kind"] as? String == "all")
        #expect(process["observedValue"] as? String == "alive")
        // Beats every 5 s, the loop turns every second: never older than that plus a margin.
        #expect((process["claim_loop_age_seconds"] as? Int).map { $0 <= 7 } == true)
        #expect(try await get(port, "/health/ready").0 == 200)
        #expect(try await get(port, "/health/deep").1["status"] as? String != nil)
        fila.signal(SIGTERM)
        #expect(await fila.waitForExit().status == 0)
    }

    /// A real Postgres stopped under `fila all`: liveness passes (no restart loop), readiness
    /// fails within its limit, nothing crashes; when it is back, readiness passes again.
    @Test func postgresStoppedFailsReadinessOnlyAndTheProcessRecovers() async throws {
        try await TestCluster.with { cluster throws in
            try await cluster.url.withConnection(logger: TestDatabase.logger) { connection in
                _ = try await Migrator().migrate(on: connection, logger: TestDatabase.logger)
            }
            let (fila, port) = try await start("all", cluster.url)
            #expect(try await get(port, "/health/ready").0 == 200)
            try await cluster.stopServer()
            #expect(try await get(port, "/health").0 == 200)
            let started = ContinuousClock.now
            let (status, body) = try await get(port, "/health/ready")
            #expect(status == 503)
            #expect(body["status"] as? String == "fail")
            // 1 s alone; the margin is for a machine loaded by the whole suite.
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(try await get(port, "/health/deep").0 == 503)
            // Every service keeps running through the outage.
            try await Task.sleep(for: .seconds(3))
            #expect(fila.isRunning, "\(fila.standardErrorSoFar.suffix(2000))")
            try await cluster.startServer()
            #expect(try await readyAgain(port, seconds: 30))
            fila.signal(SIGTERM)
            let output = await fila.waitForExit()
            #expect(output.status == 0, "\(Self.crashReport(output.standardError))")
        }
    }

    /// A crash's report from the top (what failed, the crashed thread), else the log's end.
    static func crashReport(_ log: String) -> String {
        guard let start = log.range(of: "Program crashed") else { return String(log.suffix(3000)) }
        return String(log[start.lowerBound...].prefix(6000))
    }

    /// Redis is part of readiness only when the rate limiter is set to use it.
    @Test func redisStoppedFailsReadinessWhenConfigured() async throws {
        try await TestRedis.with { redis in
            let (fila, port) = try await start("serve", try TestDatabase.current.url, ["REDIS_URL": redis.url])
            var (status, body) = try await get(port, "/health/ready")
            #expect(status == 200)
            #expect((body["checks"] as? [String: Any])?["redis:responseTime"] != nil)
            await redis.stop()
            let started = ContinuousClock.now
            (status, body) = try await get(port, "/health/ready")
            #expect(status == 503)
            #expect(((body["checks"] as? [String: Any])?["redis:responseTime"] as? [[String: Any]])?.first?["status"] as? String == "fail")
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(try await get(port, "/health").0 == 200)
            try await redis.start()
            #expect(try await readyAgain(port, seconds: 10))
            fila.signal(SIGTERM)
            #expect(await fila.waitForExit().status == 0)
        }
    }

    @Test func serveAloneHasNoWorkerToShow() async throws {
        let (fila, port) = try await start("serve", try TestDatabase.current.url)
        let (status, body) = try await get(port, "/health/worker")
        #expect(status == 503)
        #expect(body["status"] as? String == "fail")
        fila.signal(SIGTERM)
        #expect(await fila.waitForExit().status == 0)
    }
}

