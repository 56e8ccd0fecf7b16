import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Testing

@testable import Orchestrator

/// `GET /chips` and the chips in `/health/score` (seed T05.4), over HTTP against a real
/// database whose rows say what happened.
@Suite("Chips endpoint", .migratedDatabase, .timeLimit(.minutes(2)))
struct ChipsEndpointTests {
    let logger = TestDatabase.logger

    private func sql(_ text: String, _ client: PostgresClient) async throws {
        _ = try await client.query(PostgresQuery(unsafeSQL: text), logger: logger).collect()
    }

    private func json(_ response: TestResponse) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    @Test func usagePerChipAndScores() async throws {
        let client = try TestDatabase.current.client
        for statement in [
            "SELECT ops.add_chip('chip-a', 'A', 'evolution', 'inst-a', 'KEY_A', base_url => 'http://127.0.0.1:1', limite_diario => 50, motivo => 't')",
            "SELECT ops.add_chip('chip-b', 'B', 'zapi', 'inst-b', 'TOKEN_B', client_token_env => 'CLIENT_B', motivo => 't')",
            "SELECT ops.add_chip('chip-c', 'C', 'evolution', 'inst-c', 'KEY_C', base_url => 'http://127.0.0.1:1', motivo => 't')",
            "SELECT ops.pause_chip('chip-c', 'test')",
            "UPDATE chips SET connection_state = 'open', connection_checked_at = now(), uso_dia = current_date, uso_hoje = 2 WHERE id = 'chip-a'",
            "UPDATE chips SET connection_state = 'close', connection_checked_at = now() WHERE id = 'chip-b'",
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at, enviada_em, chip_id, provider)
            VALUES ('m1', '5511999990001', 'a', 'enviada', 'SENT', now(), now(), 'chip-a', 'evolution'),
                   ('m2', '5511999990002', 'b', 'enviada', 'SENT', now() - interval '3 days', now() - interval '3 days', 'chip-a', 'evolution'),
                   ('m3', '5511999990003', 'c', 'erro', 'FAILED_VALIDATION', now(), NULL, 'chip-a', 'evolution')
            """,
            // Failed calls: one today, two 3 days ago, one 8 days ago (out of the window).
            """
            INSERT INTO chip_falhas (chip_id, hora, outcome, falhas)
            VALUES ('chip-a', date_trunc('hour', now()), 'FAILED_VALIDATION', 1),
                   ('chip-a', date_trunc('hour', now() - interval '3 days'), 'FAILED_PROVIDER', 2),
                   ('chip-a', date_trunc('hour', now() - interval '8 days'), 'FAILED_PROVIDER', 5)
            """,
        ] {
            try await sql(statement, client)
        }
        let app = Application(router: HTTPServer.makeRouter(health: HealthAPI(client: client, postgresTimeLimit: .seconds(20), checkTimeLimit: .seconds(20), logger: logger)))
        try await app.test(.router) { http in
            try await http.execute(uri: "/chips", method: .get) { response in
                #expect(response.status == .ok)
                let chips = try #require(try self.json(response)["chips"] as? [[String: Any]])
                #expect(chips.map { $0["id"] as? String } == ["chip-a", "chip-b", "chip-c"])
                let a = chips[0]
                #expect(a["enviadas_7d"] as? Int == 2)
                #expect(a["falhas_7d"] as? Int == 3)
                #expect(a["falhas_hoje"] as? Int == 1)
                #expect(a["enviadas_hoje"] as? Int == 1)
                #expect(a["uso_hoje"] as? Int == 2 && a["limite_diario"] as? Int == 50)
                #expect(a["connection_state"] as? String == "open")
                #expect(a["circuit_state"] as? String == "CLOSED")
                #expect(chips[1]["connection_state"] as? String == "close")
                #expect(chips[2]["status"] as? String == "pausado")
                // Names of variables only, never a credential.
                #expect(!String(buffer: response.body).contains("KEY_A"))
            }
            try await http.execute(uri: "/health/score", method: .get) { response in
                let body = try self.json(response)
                #expect(body["chips"] as? [String: Int] == ["chip-a": 100, "chip-b": 0])
            }
        }
    }
}
