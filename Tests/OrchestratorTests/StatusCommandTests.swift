import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// `fila status` as an operator and a cron job run it: the sections, plain when piped, JSON,
/// and the exit status of each state.
@Suite("fila status", .migratedDatabase, .timeLimit(.minutes(3)))
struct StatusCommandTests {
    let logger = TestDatabase.logger

    private func sql(_ client: PostgresClient, _ text: String) async throws {
        _ = try await client.query(PostgresQuery(unsafeSQL: text), logger: logger).collect()
    }

    @Test func nothingRunningIsUnhealthyAndSaysSo() async throws {
        let url = try TestDatabase.current.url
        let output = try await FilaProcess.run(["status"], environment: ["DATABASE_URL": url.connectionString])
        #expect(output.status == 2, "\(output.standardError)")
        let text = output.standardOutput
        #expect(text.hasPrefix("fila: unhealthy (score "))
        for section in ["\nQUEUE  pending 0", "\nWORKERS\n  none alive\n", "\nCIRCUITS\n", "\nJOBS\n", "\nALERTS\n  none open\n"] {
            #expect(text.contains(section), "\(section) in:\n\(text)")
        }
        // Piped: no colour.
        #expect(!text.contains("\u{1B}["))
    }

    @Test func healthyThenPausedAsJSONAndText() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        try await sql(client, """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, in_flight, claim_loop_at, metadata) VALUES
                ('w1', 'worker', 'host-a', 11, 't', 3, now() - interval '1 second', '{}'),
                ('s1', 'scheduler', 'host-b', 12, 't', 0, NULL, '{"alerts": "slack"}')
            """)
        try await sql(client, "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo) VALUES ('medico-1', '5511999990001', 'olá', 'resposta')")
        let environment = ["DATABASE_URL": url.connectionString]

        let healthy = try await FilaProcess.run(["status"], environment: environment)
        #expect(healthy.status == 0, "\(healthy.standardOutput)\(healthy.standardError)")
        #expect(healthy.standardOutput.hasPrefix("fila: healthy"))
        #expect(healthy.standardOutput.contains("QUEUE  pending 1"))
        #expect(healthy.standardOutput.contains("w1"))

        try await sql(client, "SELECT ops.pause_sending('campanha-7 on hold')")
        let paused = try await FilaProcess.run(["status", "--json"], environment: environment)
        #expect(paused.status == 1, "\(paused.standardOutput)\(paused.standardError)")
        let body = try #require(try JSONSerialization.jsonObject(with: Data(paused.standardOutput.utf8)) as? [String: Any])
        #expect(body["health_status"] as? String == "degraded")
        #expect((body["sending_pause"] as? [String: Any])?["motivo"] as? String == "campanha-7 on hold")
        #expect((body["queue"] as? [String: Any])?["pendentes"] as? Int == 1)
        let workers = try #require(body["workers"] as? [[String: Any]])
        #expect(workers.map { $0["id"] as? String } == ["s1", "w1"])
        #expect(workers.first { $0["id"] as? String == "w1" }?["in_flight"] as? Int == 3)
        for key in ["overall_score", "components", "circuits", "jobs", "alerts"] { #expect(body[key] != nil, "\(key)") }
        #expect((body["sends_per_minute"] as? [Int]).map { $0.count == 60 && $0.allSatisfy { $0 == 0 } } == true)

        let text = try await FilaProcess.run(["status"], environment: environment)
        #expect(text.status == 1)
        #expect(text.standardOutput.contains("SENDING paused by "))
        #expect(text.standardOutput.contains("campanha-7 on hold"))
    }

    @Test func anUnreachableDatabaseIsExit69() async throws {
        let output = try await FilaProcess.run(["status"], environment: ["DATABASE_URL": "postgres://fila:pw@127.0.0.1:1/fila?sslmode=disable"])
        #expect(output.status == 69)
        #expect(output.errorLines.count == 1)
    }
}
