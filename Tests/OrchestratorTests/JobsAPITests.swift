import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Jobs
import Logging
import PostgresNIO
import Primitives
import Testing

@testable import Orchestrator

/// `/jobs` over HTTP against a real database: statuses 200, 401, 403, 404, 409 and 400,
/// and the correlation id of a run.
@Suite("HTTP /jobs", .migratedDatabase)
struct JobsAPITests {
    let logger = TestDatabase.logger
    let token = "test-admin-token-0123456789"

    /// The API on the test's database: through the router alone, or, given a `configuration`,
    /// on a live server built as `fila serve` builds it.
    private func withAPI(
        jobs extra: [JobDefinition] = [],
        adminToken: String?,
        live configuration: FilaConfiguration? = nil,
        _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void
    ) async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let catalog = try JobCatalog(BuiltinJobs.all(settings: .init(timeZone: TimeZone(identifier: "America/Sao_Paulo")!)) + extra)
        try await catalog.sync(client: client, logger: logger)
        try await client.query(
            // Beating for an hour: the rescue has its witness.
            "INSERT INTO worker_heartbeats (id, kind, host, pid, version, beating_since) VALUES ('api-1', 'api', 'test', 1, 'test', now() - interval '1 hour')",
            logger: logger
        )
        let api = JobsAPI(
            client: client, catalog: catalog, runner: JobRunner(client: client, lockURL: url, workerID: "api-1"),
            admin: AdminAuthorization(token: adminToken), logger: logger
        )
        if let configuration {
            let app = HTTPServer.makeApplication(configuration: configuration, jobs: api, logger: logger)
            try await app.test(.live) { http in try await body(http, client) }
        } else {
            let app = Application(router: HTTPServer.makeRouter(jobs: api))
            try await app.test(.router) { http in try await body(http, client) }
        }
    }

    private var auth: HTTPFields { [.authorization: "Bearer \(token)"] }

    private func json(_ response: TestResponse) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(buffer: response.body))
    }

    @Test func postRunsTheJobAndReturnsItsExecution() async throws {
        try await withAPI(adminToken: token) { http, client in
            try await client.query(
                "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, processando_desde, worker_id) VALUES ('m', '5521900000001', 'x', 'processando', now() - interval '2 hours', 'w-gone')",
                logger: logger
            )
            // The witness beats now: a witness's last beat must be under 15 s old, and a
            // loaded machine may take longer than that between the set-up and this request.
            try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() WHERE id = 'api-1'", logger: logger)
            var headers = auth
            headers[.correlationID] = "req-42"
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: headers) { response throws in
                #expect(response.status == .ok)
                let body = try json(response)
                #expect(body["status"] == "success")
                #expect(body["triggered_by"] == "http")
                #expect(body["correlation_id"] == "req-42")
                #expect(body["worker_id"] == "api-1")
                #expect(body["result"] == ["rescued": 1, "judged": true, "reset": 0])
            }
            try await http.execute(uri: "/jobs/verificar-heartbeats/executions?limit=5", method: .get, headers: auth) { response throws in
                #expect(response.status == .ok)
                #expect(try json(response)["executions"] == .array([]))
            }
            try await http.execute(uri: "/jobs/resetar-fila-travada/executions", method: .get, headers: auth) { response throws in
                guard case .array(let executions) = try json(response)["executions"] else { Issue.record("no executions array"); return }
                #expect(executions.count == 1)
            }
            try await http.execute(uri: "/jobs", method: .get, headers: auth) { response throws in
                #expect(response.status == .ok)
                guard case .array(let jobs) = try json(response)["jobs"] else { Issue.record("no jobs array"); return }
                #expect(jobs.count == 12)
                let reset = jobs.first { $0["name"] == "resetar-fila-travada" }
                #expect(reset?["state"] == "ok")
                #expect(reset?["last_status"] == "success")
                #expect(reset?["schedule"] == "every 15m")
                #expect(jobs.first { $0["name"] == "limpar-fila-antiga" }?["schedule"] == "cron 0 3 * * *")
                #expect(jobs.first { $0["name"] == "limpar-fila-antiga" }?["time_zone"] == "America/Sao_Paulo")
            }
        }
    }

    @Test func unknownJobsAreNotFound() async throws {
        try await withAPI(adminToken: token) { http, _ in
            try await http.execute(uri: "/jobs/nao-existe", method: .post, headers: auth) { response throws in
                #expect(response.status == .notFound)
                #expect(try json(response)["error"]?["code"] == "unknown_job")
            }
            try await http.execute(uri: "/jobs/nao-existe/executions", method: .get, headers: auth) { response throws in
                #expect(response.status == .notFound)
            }
            try await http.execute(uri: "/jobs/verificar-heartbeats/executions?limit=0", method: .get, headers: auth) { response throws in
                #expect(response.status == .badRequest)
                #expect(try json(response)["error"]?["code"] == "invalid_limit")
            }
        }
    }

    @Test func aSecondRunWhileOneIsGoingIsAConflict() async throws {
        // The slow job says when it has started, and waits until the test lets it finish.
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseContinuation) = AsyncStream.makeStream(of: Void.self)
        let slow = JobDefinition(name: "lento", schedule: .every(seconds: 60), description: "slow", sla: .seconds(5)) { _ in
            startedContinuation.yield()
            for await _ in release { break }
            return [:]
        }
        try await withAPI(jobs: [slow], adminToken: token) { http, client in
            let auth = auth
            async let first: HTTPResponse.Status = http.execute(uri: "/jobs/lento", method: .post, headers: auth) { $0.status }
            for await _ in started { break }
            try await http.execute(uri: "/jobs/lento", method: .post, headers: auth) { response throws in
                #expect(response.status == .conflict)
                #expect(try json(response)["error"]?["code"] == "already_running")
            }
            releaseContinuation.yield()
            #expect(try await first == .ok)
            let runs = try await client.query("SELECT count(*) FROM job_executions WHERE job_name = 'lento'", logger: logger).collect().first!.decode(Int.self)
            #expect(runs == 1)
        }
    }

    @Test func theAdminTokenIsRequired() async throws {
        try await withAPI(adminToken: token) { http, client in
            for headers: HTTPFields in [[:], [.authorization: "Bearer wrong-token-0123456789"], [.authorization: token]] {
                try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: headers) { response throws in
                    #expect(response.status == .unauthorized)
                    #expect(response.headers[.wwwAuthenticate] == "Bearer")
                    #expect(try json(response)["error"]?["code"] == "unauthorized")
                }
            }
            try await http.execute(uri: "/jobs", method: .get) { response throws in
                #expect(response.status == .unauthorized)
            }
            let runs = try await client.query("SELECT count(*) FROM job_executions", logger: logger).collect().first!.decode(Int.self)
            #expect(runs == 0)
        }
        // A second API needs a database of its own.
        try await TestDatabaseTrait.migratedDatabase.withScope {
            try await withAPI(adminToken: nil) { http, _ in
                try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: auth) { response throws in
                    #expect(response.status == .forbidden)
                    #expect(try json(response)["error"]?["code"] == "admin_disabled")
                }
            }
        }
    }

    private func executions(_ client: PostgresClient) async throws -> Int {
        try await client.query("SELECT count(*) FROM job_executions", logger: logger).collect().first!.decode(Int.self)
    }

    /// A body over the limit is answered 413 with the error body before the handler runs:
    /// the job does not run. One within it changes nothing.
    @Test func aBodyOverTheLimitIsRefusedAndNothingRuns() async throws {
        try await withAPI(adminToken: token) { http, client in
            let limit = FilaConfiguration().httpMaxRequestBodyBytes
            try await http.execute(
                uri: "/jobs/resetar-fila-travada", method: .post, headers: auth,
                body: ByteBuffer(repeating: UInt8(ascii: "x"), count: limit + 1)
            ) { response throws in
                #expect(response.status == .contentTooLarge)
                #expect(try json(response)["error"]?["code"] == "body_too_large")
                #expect(try json(response)["error"]?["message"] == .string("the request body is larger than \(limit) bytes"))
                #expect(response.headers[.connection] == "close")
            }
            #expect(try await executions(client) == 0)
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: auth, body: ByteBuffer(string: "{}")) { response throws in
                #expect(response.status == .ok)
            }
            #expect(try await executions(client) == 1)
        }
    }

    /// The run's correlation id is the request's X-Correlation-ID, stored on its
    /// job_executions row and returned on the response; without one, a new id is stored and
    /// returned; a malformed, too long or repeated one is replaced by a new id (the run still
    /// happens, and the response says which id it ran with). Error answers carry it too.
    @Test func theRunsCorrelationIDIsTheRequestsOrANewOne() async throws {
        try await withAPI(adminToken: token) { http, client in
            func storedIDs() async throws -> [String] {
                var ids: [String] = []
                for try await id in try await client.query("SELECT correlation_id FROM job_executions ORDER BY started_at, id", logger: logger)
                    .decode(String.self)
                {
                    ids.append(id)
                }
                return ids
            }
            var given = auth
            given[.correlationID] = "pedido-42:tentativa/1"
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: given) { response throws in
                #expect(response.status == .ok)
                #expect(response.headers[.correlationID] == "pedido-42:tentativa/1")
                #expect(try json(response)["correlation_id"] == "pedido-42:tentativa/1")
            }
            #expect(try await storedIDs() == ["pedido-42:tentativa/1"])

            var generated: [String] = []
            var tooLong = auth
            tooLong[.correlationID] = String(repeating: "a", count: 129)
            var nonASCII = auth
            nonASCII[.correlationID] = "pedido-ção"
            var withSpace = auth
            withSpace[.correlationID] = "pedido 42"
            var twice = auth
            twice.append(HTTPField(name: .correlationID, value: "um"))
            twice.append(HTTPField(name: .correlationID, value: "dois"))
            for headers in [auth, tooLong, nonASCII, withSpace, twice] {
                try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: headers) { response throws in
                    #expect(response.status == .ok)
                    let returned = try #require(response.headers[.correlationID])
                    #expect(UUID(uuidString: returned) != nil && returned == returned.lowercased())
                    #expect(try json(response)["correlation_id"] == .string(returned))
                    generated.append(returned)
                }
            }
            #expect(Set(generated).count == 5)
            #expect(try await storedIDs() == ["pedido-42:tentativa/1"] + generated)

            var longest = auth
            longest[.correlationID] = String(repeating: "a", count: 128)
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: longest) { response throws in
                #expect(response.status == .ok)
                #expect(try json(response)["correlation_id"] == .string(String(repeating: "a", count: 128)))
            }

            // Errors: unknown job (404), no token (401), unknown route (404).
            var unknown = auth
            unknown[.correlationID] = "erro-1"
            try await http.execute(uri: "/jobs/nao-existe", method: .post, headers: unknown) { response throws in
                #expect(response.status == .notFound)
                #expect(response.headers[.correlationID] == "erro-1")
            }
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: [.correlationID: "erro-2"]) { response throws in
                #expect(response.status == .unauthorized)
                #expect(response.headers[.correlationID] == "erro-2")
            }
            try await http.execute(uri: "/rota-nenhuma", method: .get, headers: [:]) { response throws in
                #expect(response.status == .notFound)
                #expect(response.headers[.correlationID].flatMap { UUID(uuidString: $0) } != nil)
            }
            try await http.execute(uri: "/health", method: .get, headers: [.correlationID: "sonda-1"]) { response throws in
                #expect(response.status == .ok)
                #expect(response.headers[.correlationID] == "sonda-1")
            }
        }
    }

    /// On the live server `fila serve` builds: a declared 50 MB body is refused before it is
    /// read, and so is a chunked one as soon as it passes the limit; a connection that sends
    /// nothing, or only part of a request head, is closed after the idle timeout.
    @Test(.timeLimit(.minutes(2)))
    func theListenerBoundsBodiesAndIdleConnections() async throws {
        // A generous idle timeout while bodies are tested (a slow machine must not close a
        // connection before its answer), a short one for the idle connections.
        let bodies = FilaConfiguration(httpIdleTimeout: .seconds(120), httpMaxRequestBodyBytes: 64 * 1024)
        try await withAPI(adminToken: token, live: bodies) { http, client in
            let port = try #require(http.port)
            let head = "POST /jobs/resetar-fila-travada HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(token)\r\n"

            let declared = try await RawHTTPConnection.exchange(
                port: port,
                send: [Array((head + "Content-Length: 52428800\r\n\r\n").utf8), [UInt8](repeating: 0x78, count: 16 * 1024)]
            )
            #expect(declared.hasPrefix("HTTP/1.1 413"), "\(declared.prefix(200))")
            #expect(declared.contains(#""code":"body_too_large""#))

            let chunk = [UInt8](repeating: 0x78, count: 16 * 1024)
            let chunkFrame = Array("4000\r\n".utf8) + chunk + Array("\r\n".utf8)
            let chunked = try await RawHTTPConnection.exchange(
                port: port,
                send: [Array((head + "Transfer-Encoding: chunked\r\n\r\n").utf8)] + Array(repeating: chunkFrame, count: 5) + [Array("0\r\n\r\n".utf8)]
            )
            #expect(chunked.hasPrefix("HTTP/1.1 413"), "\(chunked.prefix(200))")
            #expect(try await executions(client) == 0)
        }

        let idle = FilaConfiguration(httpIdleTimeout: .seconds(1))
        // A second API needs a database of its own.
        try await TestDatabaseTrait.migratedDatabase.withScope {
            try await withAPI(adminToken: token, live: idle) { http, client in
                let port = try #require(http.port)
                // Nothing at all, then half a request head: the server closes both.
                #expect(try await RawHTTPConnection.isClosedByServer(port: port, send: [], within: .seconds(30)))
                #expect(try await RawHTTPConnection.isClosedByServer(port: port, send: [Array("POST /jobs/resetar-fila-travada HTTP/1.1\r\nHost:".utf8)], within: .seconds(30)))
                #expect(try await executions(client) == 0)
            }
        }
    }
}
