import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import Orchestrator

/// The API's middleware without a database: every failure reaches the client as
/// `{"error": {"code", "message"}}` with its status, the admin token guards only the routes
/// it is added to, and every JSON body comes out of one encoder.
@Suite("HTTP errors, auth and encoding")
struct APIErrorTests {
    let token = "test-admin-token-0123456789"

    private struct Failure: Error, CustomStringConvertible {
        var description: String { "secret detail: password=hunter2" }
    }

    /// Timestamps, paths and keys in an order the encoder must sort.
    private struct Sample: Encodable, Sendable {
        let zeta = "a/b"
        let alpha = Date(timeIntervalSince1970: 0)
    }

    /// The API's router (its middleware and routes as `fila serve` builds them) plus test
    /// routes that fail in each way, a guarded group and a public route beside it.
    private func withRouter(
        adminToken: String?,
        _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void
    ) async throws {
        let router = HTTPServer.makeRouter()
        router.get("/test/failure") { _, _ -> String in throw Failure() }
        router.get("/test/http-error") { _, _ -> String in throw HTTPError(.methodNotAllowed, message: "use POST") }
        router.get("/test/sample") { _, _ in JSONResponse(Sample(), status: .accepted) }
        router.group("/test/database")
            .add(middleware: DatabaseFailureMiddleware(logger: Logger(label: "test")))
            .get { _, _ -> String in throw Failure() }
        router.group("/test/admin")
            .add(middleware: AdminAuthorization(token: adminToken))
            .get { _, _ in "admitted" }
        router.get("/test/public") { _, _ in "public" }
        try await Application(router: router).test(.router, body)
    }

    private func text(_ response: TestResponse) -> String {
        String(buffer: response.body)
    }

    @Test func anUnknownRouteIsA404ErrorBody() async throws {
        try await withRouter(adminToken: token) { client in
            try await client.execute(uri: "/nope", method: .get) { response in
                #expect(response.status == .notFound)
                #expect(response.headers[.contentType] == "application/json")
                #expect(text(response) == #"{"error":{"code":"not_found","message":"not found"}}"#)
            }
        }
    }

    @Test func anUnexpectedErrorIsA500WithoutItsDetail() async throws {
        try await withRouter(adminToken: token) { client in
            try await client.execute(uri: "/test/failure", method: .get) { response in
                #expect(response.status == .internalServerError)
                #expect(
                    text(response)
                        == #"{"error":{"code":"internal_error","message":"the request failed; the server's log says why"}}"#
                )
                #expect(!text(response).contains("hunter2"))
            }
        }
    }

    @Test func hummingbirdErrorsKeepTheirStatusAndMessage() async throws {
        try await withRouter(adminToken: token) { client in
            try await client.execute(uri: "/test/http-error", method: .get) { response in
                #expect(response.status == .methodNotAllowed)
                #expect(text(response) == #"{"error":{"code":"method_not_allowed","message":"use POST"}}"#)
            }
        }
    }

    @Test func aDatabaseFailureIsA503() async throws {
        try await withRouter(adminToken: token) { client in
            try await client.execute(uri: "/test/database", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(text(response) == #"{"error":{"code":"database_unavailable","message":"the database did not answer; try again"}}"#)
                #expect(!text(response).contains("hunter2"))
            }
        }
    }

    /// 401 with `WWW-Authenticate: Bearer` without the right token, the route with it, and
    /// the public routes beside the guarded group without any.
    @Test func theTokenGuardsOnlyItsGroup() async throws {
        try await withRouter(adminToken: token) { client in
            for headers: HTTPFields in [[:], [.authorization: "Bearer wrong"], [.authorization: token], [.authorization: "Bearer \(token)x"]] {
                try await client.execute(uri: "/test/admin", method: .get, headers: headers) { response in
                    #expect(response.status == .unauthorized)
                    #expect(response.headers[.wwwAuthenticate] == "Bearer")
                    #expect(response.headers[.contentType] == "application/json")
                    #expect(text(response) == #"{"error":{"code":"unauthorized","message":"send the admin token as 'Authorization: Bearer TOKEN'"}}"#)
                }
            }
            try await client.execute(uri: "/test/admin", method: .get, headers: [.authorization: "Bearer \(token)"]) { response in
                #expect(response.status == .ok)
                #expect(text(response) == "admitted")
            }
            try await client.execute(uri: "/test/public", method: .get) { response in
                #expect(response.status == .ok)
                #expect(text(response) == "public")
            }
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    @Test func withoutATokenTheGuardedGroupIsOff() async throws {
        try await withRouter(adminToken: nil) { client in
            try await client.execute(uri: "/test/admin", method: .get, headers: [.authorization: "Bearer \(token)"]) { response in
                #expect(response.status == .forbidden)
                #expect(text(response) == #"{"error":{"code":"admin_disabled","message":"the admin API is off: set ADMIN_TOKEN to use it"}}"#)
            }
            try await client.execute(uri: "/test/public", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    /// The limit applies to every route, public ones included, before the route's own checks.
    @Test func aBodyOverTheLimitIsA413EvenBeforeAuthorization() async throws {
        try await withRouter(adminToken: token) { client in
            let limit = FilaConfiguration().httpMaxRequestBodyBytes
            try await client.execute(uri: "/test/admin", method: .get, body: ByteBuffer(repeating: 0x78, count: limit + 1)) { response in
                #expect(response.status == .contentTooLarge)
                #expect(response.headers[.connection] == "close")
                #expect(text(response) == #"{"error":{"code":"body_too_large","message":"the request body is larger than \#(limit) bytes"}}"#)
            }
        }
    }

    @Test func bodiesHaveSortedKeysUnescapedSlashesAndISODates() async throws {
        try await withRouter(adminToken: token) { client in
            try await client.execute(uri: "/test/sample", method: .get) { response in
                #expect(response.status == .accepted)
                #expect(response.headers[.contentType] == "application/json")
                #expect(text(response) == #"{"alpha":"1970-01-01T00:00:00Z","zeta":"a/b"}"#)
            }
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.headers[.contentType] == "application/health+json")
                #expect(text(response) == #"{"status":"pass","version":"\#(FilaVersion.current)"}"#)
            }
        }
    }
}
