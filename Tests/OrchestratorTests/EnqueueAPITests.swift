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
import Queue
import Testing

@testable import Orchestrator

/// `POST /fila` and `POST /fila/batch` against a real database: 201 written, 200 duplicate,
/// 400 with each reason and nothing written, 401/403 without the producer token, 413 too big.
@Suite("HTTP /fila", .migratedDatabase)
struct EnqueueAPITests {
    let logger = TestDatabase.logger
    let token = "test-producer-token-0123456789"

    private func withAPI(producerToken: String?, maxBody: Int = 1 << 20, _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void) async throws {
        let client = try TestDatabase.current.client
        let api = EnqueueAPI(
            queue: MessageQueue(client: client),
            producer: AdminAuthorization(token: producerToken, role: "producer", variable: "PRODUCER_TOKEN"),
            logger: logger
        )
        let app = Application(router: HTTPServer.makeRouter(enqueue: api, maxRequestBodyBytes: maxBody))
        try await app.test(.router) { http in try await body(http, client) }
    }

    private var auth: HTTPFields { [.authorization: "Bearer \(token)", .contentType: "application/json"] }

    private func post(_ http: any TestClientProtocol, _ path: String, _ body: String, headers: HTTPFields? = nil) async throws -> (HTTPResponse.Status, JSONValue) {
        try await http.execute(uri: path, method: .post, headers: headers ?? auth, body: ByteBuffer(string: body)) { response in
            (response.status, (try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))) ?? .null)
        }
    }

    private func count(_ client: PostgresClient, where condition: String = "true") async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM fila_mensagens WHERE \(condition)"), logger: logger)
            .collect().first!.decode(Int.self)
    }

    static let one = #"{"cliente_id": "medico-42", "telefone": "5511999990000", "conteudo": "Olá", "tipo": "resposta", "idempotency_key": "pedido-981"}"#

    @Test func oneMessageIsCreatedOnceAndCarriesTheRequestsCorrelationID() async throws {
        try await withAPI(producerToken: token) { http, client in
            var headers = auth
            headers[HTTPField.Name("X-Correlation-ID")!] = "checkout-77"
            let (status, body) = try await post(http, "/fila", Self.one, headers: headers)
            #expect(status == .created)
            #expect(body["inserted"] == true)
            let id = try #require(body["id"]?.stringValue)
            #expect(try await count(client, where: "id = '\(id)' AND correlation_id = 'checkout-77' AND cliente_id = 'medico-42' AND status = 'pendente'") == 1)

            let (again, duplicate) = try await post(http, "/fila", Self.one)
            #expect(again == .ok)
            #expect(duplicate["inserted"] == false && duplicate["id"]?.stringValue == id)
            #expect(try await count(client) == 1)

            for (text, code) in [
                (#"{"cliente_id": "m", "telefone": "123", "conteudo": "x", "tipo": "resposta"}"#, "invalid_message"),
                (#"{"cliente_id": "m", "telefone": "5511999990000", "conteudo": "x"}"#, "invalid_message"),
                (#"[1, 2]"#, "invalid_message"),
                ("", "invalid_body"),
            ] {
                let (status, body) = try await post(http, "/fila", text)
                #expect(status == .badRequest, "\(text)")
                #expect(body["error"]?["code"]?.stringValue == code, "\(text)")
                #expect(body["error"]?["message"]?.stringValue?.isEmpty == false)
            }
            #expect(try await count(client) == 1)
        }
    }

    @Test func aBatchIsAllOrNothingWithEachReason() async throws {
        try await withAPI(producerToken: token) { http, client in
            _ = try await post(http, "/fila", Self.one)
            let batch = """
                [{"cliente_id": "medico-1", "telefone": "5511999990001", "conteudo": "um", "tipo": "campanha"},
                 \(Self.one),
                 {"cliente_id": "medico-2", "telefone": "5511999990002", "conteudo": "dois", "tipo": "campanha", "prioridade": 5}]
                """
            let (status, body) = try await post(http, "/fila/batch", batch)
            #expect(status == .created)
            #expect(body["inserted"] == 2 && body["duplicates"] == 1)
            guard case .array(let results)? = body["results"] else { Issue.record("no results: \(body)"); return }
            #expect(results.map { $0["posicao"] } == [1, 2, 3])
            #expect(results.map { $0["inserted"] } == [true, false, true])
            #expect(try await count(client) == 3)

            // Everything again: all duplicates.
            let (repeated, _) = try await post(http, "/fila/batch", "[\(Self.one)]")
            #expect(repeated == .ok)

            let bad = """
                [{"cliente_id": "medico-3", "telefone": "5511999990003", "conteudo": "ok", "tipo": "resposta"},
                 {"cliente_id": "medico-4", "telefone": "x", "conteudo": "bad phone", "tipo": "resposta"},
                 {"cliente_id": "medico-5", "telefone": "5511999990005", "conteudo": "ok", "tipo": "resposta"},
                 "not an object"]
                """
            let (refused, error) = try await post(http, "/fila/batch", bad)
            #expect(refused == .badRequest)
            #expect(error["error"]?["code"] == "invalid_messages")
            guard case .array(let rejected)? = error["error"]?["rejected"] else { Issue.record("no rejected: \(error)"); return }
            #expect(rejected.map { $0["posicao"] } == [2, 4])
            #expect(rejected.allSatisfy { $0["reason"]?.stringValue?.isEmpty == false })
            #expect(try await count(client) == 3)

            let many = "[" + Array(repeating: #"{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta"}"#, count: 1001).joined(separator: ",") + "]"
            let (tooMany, tooManyBody) = try await post(http, "/fila/batch", many)
            #expect(tooMany == .contentTooLarge && tooManyBody["error"]?["code"] == "batch_too_large")
            for text in ["[]", "{}", "nonsense"] {
                #expect(try await post(http, "/fila/batch", text).0 == .badRequest, "\(text)")
            }
            #expect(try await count(client) == 3)
        }
    }

    @Test func theProducerTokenIsRequiredAndTheBodyLimited() async throws {
        try await withAPI(producerToken: nil) { http, client in
            let (status, body) = try await post(http, "/fila", Self.one)
            #expect(status == .forbidden && body["error"]?["code"] == "producer_disabled")
            #expect(try await count(client) == 0)
        }
        try await withAPI(producerToken: token, maxBody: 200) { http, client in
            let (status, body) = try await post(http, "/fila", Self.one, headers: [.authorization: "Bearer wrong-token-0123456789", .contentType: "application/json"])
            #expect(status == .unauthorized && body["error"]?["code"] == "unauthorized")
            #expect((body["error"]?["message"]?.stringValue ?? "").contains("producer token"))
            let big = #"{"cliente_id": "m", "telefone": "5511999990000", "tipo": "resposta", "conteudo": ""# + String(repeating: "a", count: 300) + #""}"#
            #expect(try await post(http, "/fila", big).0 == .contentTooLarge)
            #expect(try await count(client) == 0)
        }
    }

    /// A batch's items are cut from the bytes sent, whatever their strings hold.
    @Test func aBatchsItemsAreTheBytesSent() throws {
        func items(_ text: String) -> [String]? {
            let data = Data(text.utf8)
            return EnqueueAPI.elementRanges(ofArray: data)?.map { String(decoding: data[$0], as: UTF8.self) }
        }
        #expect(items(#" [ {"a": "x,]}\"[", "m": {"k": [1, {"z": 2}]}} ,{"b":1}, null, "s" ] "#)
            == [#"{"a": "x,]}\"[", "m": {"k": [1, {"z": 2}]}}"#, #"{"b":1}"#, "null", #""s""#])
        #expect(items("[]") == [])
        #expect(items("[1,,2]") == nil)
        #expect(items("[1, 2] 3") == nil)
        #expect(items(#"{"a": 1}"#) == nil)
        #expect(items("[1, 2") == nil)
    }
}
