import Database
import FilaTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Jobs
import Logging
import PostgresNIO
import Testing

@testable import Orchestrator

/// `/jobs` over HTTP against a real database: statuses 200, 401, 403, 404, 409 and 400.
@Suite("HTTP /jobs")
struct JobsAPITests {
    let logger = TestDatabase.logger
    let token = "test-admin-token-0123456789"

    private func withAPI(jobs extra: [JobDefinition] = [], adminToken: String?, _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void) async throws {
        try await TestDatabase.withMigrated { url throws in
            try await TestDatabase.withClient(url) { client throws in
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
                let app = Application(router: HTTPServer.makeRouter(jobs: api))
                try await app.test(.router) { http in try await body(http, client) }
            }
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
                #expect(jobs.count == 10)
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
        try await withAPI(adminToken: nil) { http, _ in
            try await http.execute(uri: "/jobs/resetar-fila-travada", method: .post, headers: auth) { response throws in
                #expect(response.status == .forbidden)
                #expect(try json(response)["error"]?["code"] == "admin_disabled")
            }
        }
    }
}
