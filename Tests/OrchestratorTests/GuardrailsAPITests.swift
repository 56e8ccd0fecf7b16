import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Primitives
import Testing

@testable import Orchestrator

/// `POST /admin/medicos/{cliente_id}/unblock` against a real database: 200 with the record,
/// 400 without a motivo, 404 for a doctor not blocked, 401/403 without the token.
@Suite("HTTP /admin/medicos", .migratedDatabase)
struct GuardrailsAPITests {
    let logger = TestDatabase.logger
    let token = "test-admin-token-0123456789"

    private func withAPI(adminToken: String?, _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void) async throws {
        let client = try TestDatabase.current.client
        let api = GuardrailsAPI(client: client, admin: AdminAuthorization(token: adminToken), logger: logger)
        let app = Application(router: HTTPServer.makeRouter(guardrails: api))
        try await app.test(.router) { http in try await body(http, client) }
    }

    private var auth: HTTPFields { [.authorization: "Bearer \(token)", .contentType: "application/json"] }

    private func json(_ response: TestResponse) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))
    }

    private func unblock(_ http: any TestClientProtocol, _ doctor: String, body: String, headers: HTTPFields? = nil) async throws -> (HTTPResponse.Status, JSONValue) {
        try await http.execute(uri: "/admin/medicos/\(doctor)/unblock", method: .post, headers: headers ?? auth, body: ByteBuffer(string: body)) { response in
            (response.status, try json(response))
        }
    }

    private func rows(_ client: PostgresClient, _ sql: String) async throws -> [String] {
        var result: [String] = []
        for try await text in try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(String.self) { result.append(text) }
        return result
    }

    @Test func unblockRecordsWhoAndWhyAndAnswersWhatChanged() async throws {
        try await withAPI(adminToken: token) { http, client in
            try await client.query("SELECT ops.block_medico('medico-42', 'pediu para parar')", logger: logger)
            let (status, body) = try await unblock(http, "medico-42", body: #"{"motivo": " confirmou por telefone ", "por": "maria"}"#)
            #expect(status == .ok)
            #expect(body["cliente_id"] == "medico-42")
            #expect(body["motivo"] == "pediu para parar")
            #expect(body["unblocked_by"] == "admin-token:maria")
            #expect(body["unblock_motivo"] == "confirmou por telefone")
            #expect(body["unblocked_at"]?.stringValue != nil && body["blocked_at"]?.stringValue != nil)
            // The block stays as history, closed with who and why.
            #expect(try await rows(client, "SELECT concat_ws('|', unblocked_by, unblock_motivo) FROM medico_bloqueios WHERE cliente_id = 'medico-42'")
                == ["admin-token:maria|confirmou por telefone"])
            #expect(try await rows(client, "SELECT cliente_id FROM ops.medicos_bloqueados").isEmpty)

            // Without a declared name, the token is who.
            try await client.query("SELECT ops.block_medico('medico-7', 'x')", logger: logger)
            let (again, record) = try await unblock(http, "medico-7", body: #"{"motivo": "ok"}"#)
            #expect(again == .ok && record["unblocked_by"] == "admin-token")

            // A second unblock finds nothing blocked.
            let (second, error) = try await unblock(http, "medico-42", body: #"{"motivo": "de novo"}"#)
            #expect(second == .notFound)
            #expect(error == ["error": ["code": "not_blocked", "message": "medico-42 is not blocked"]])
        }
    }

    @Test func badInputIsRefusedAndChangesNothing() async throws {
        try await withAPI(adminToken: token) { http, client in
            try await client.query("SELECT ops.block_medico('medico-1', 'motivo')", logger: logger)
            for body in ["", "{}", #"{"motivo": "   "}"#, #"{"motivo": null}"#] {
                let (status, error) = try await unblock(http, "medico-1", body: body)
                #expect(status == .badRequest, "\(body)")
                #expect(error["error"]?["code"] == "motivo_required", "\(body)")
            }
            let (notJSON, error) = try await unblock(http, "medico-1", body: "motivo=x")
            #expect(notJSON == .badRequest && error["error"]?["code"] == "invalid_body")
            let (notText, wrongType) = try await unblock(http, "medico-1", body: #"{"motivo": 42}"#)
            #expect(notText == .badRequest && wrongType["error"]?["code"] == "invalid_motivo")
            #expect(try await rows(client, "SELECT cliente_id FROM ops.medicos_bloqueados") == ["medico-1"])

            // An unknown doctor is one not blocked.
            let (unknown, missing) = try await unblock(http, "medico-desconhecido", body: #"{"motivo": "x"}"#)
            #expect(unknown == .notFound && missing["error"]?["code"] == "not_blocked")
        }
    }

    @Test func theAdminTokenIsRequired() async throws {
        try await withAPI(adminToken: token) { http, client in
            try await client.query("SELECT ops.block_medico('medico-1', 'motivo')", logger: logger)
            let (none, error) = try await unblock(http, "medico-1", body: #"{"motivo": "x"}"#, headers: [.contentType: "application/json"])
            #expect(none == .unauthorized && error["error"]?["code"] == "unauthorized")
            let (wrong, _) = try await unblock(http, "medico-1", body: #"{"motivo": "x"}"#, headers: [.authorization: "Bearer nope"])
            #expect(wrong == .unauthorized)
            #expect(try await rows(client, "SELECT cliente_id FROM ops.medicos_bloqueados") == ["medico-1"])
        }
        try await withAPI(adminToken: nil) { http, _ in
            let (status, error) = try await unblock(http, "medico-1", body: #"{"motivo": "x"}"#)
            #expect(status == .forbidden && error["error"]?["code"] == "admin_disabled")
        }
    }
}
