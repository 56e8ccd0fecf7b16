#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Jobs
import Logging
import PostgresNIO
import Synchronization

/// `/jobs`: list jobs, read a job's executions, and run one now (the seed's
/// `POST /jobs/resetar-fila-travada` and friends). Every route needs the admin token.
struct JobsAPI: Sendable {
    let client: PostgresClient
    let catalog: JobCatalog
    let runner: JobRunner
    let admin: AdminAuthorization
    let logger: Logger
    /// Whether this process has added its jobs to job_definitions (insert-only, once).
    private let synced = SyncedFlag()

    init(client: PostgresClient, catalog: JobCatalog, runner: JobRunner, admin: AdminAuthorization, logger: Logger) {
        self.client = client
        self.catalog = catalog
        self.runner = runner
        self.admin = admin
        self.logger = logger
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/jobs") { request, _ in
            try await admin.guarded(request) {
                try await databaseCall {
                    try HTTPServer.jsonResponse(["jobs": try await JobReport.list(client: client, logger: logger)])
                }
            }
        }
        router.get("/jobs/:name/executions") { request, context in
            try await admin.guarded(request) {
                let name = context.parameters.get("name") ?? ""
                var limit = 20
                if let text = request.uri.queryParameters.get("limit") {
                    guard let value = Int(text), (1...1000).contains(value) else {
                        return try HTTPServer.errorResponse(.badRequest, code: "invalid_limit", message: "limit must be a whole number from 1 to 1000")
                    }
                    limit = value
                }
                return try await databaseCall {
                    guard try await !JobReport.list(client: client, name: name, logger: logger).isEmpty else {
                        return try HTTPServer.errorResponse(.notFound, code: "unknown_job", message: "no job named '\(name)'")
                    }
                    let executions = try await JobReport.history(client: client, name: name, limit: limit, logger: logger)
                    return try HTTPServer.jsonResponse(["executions": executions])
                }
            }
        }
        router.post("/jobs/:name") { request, context in
            try await admin.guarded(request) {
                let name = context.parameters.get("name") ?? ""
                guard let job = catalog[name] else {
                    return try HTTPServer.errorResponse(
                        .notFound, code: "unknown_job",
                        message: "no job named '\(name)'; jobs: \(catalog.jobs.map(\.name).sorted().joined(separator: ", "))"
                    )
                }
                let correlationID = try CorrelationID.from(request)
                return try await databaseCall {
                    switch try await runner.runNow(job, trigger: .http, correlationID: correlationID, logger: logger) {
                    case .alreadyRunning:
                        return try HTTPServer.errorResponse(.conflict, code: "already_running", message: "a run of \(name) is still going; try again when it ends")
                    case .abandoned:
                        return try HTTPServer.errorResponse(.serviceUnavailable, code: "run_abandoned", message: "the run was failed by a scheduler before it started; try again")
                    case .finished(let execution):
                        return try HTTPServer.jsonResponse(execution)
                    }
                }
            }
        }
    }

    /// A database failure is a 503 with a reason, never a dropped connection.
    private func databaseCall(_ body: () async throws -> Response) async throws -> Response {
        do {
            if !synced.value {
                try await catalog.sync(client: client, overwrite: false, logger: logger)
                synced.set()
            }
            return try await body()
        } catch {
            logger.error("jobs API: database call failed", metadata: ["error": .string(String(reflecting: error))])
            return try HTTPServer.errorResponse(.serviceUnavailable, code: "database_unavailable", message: "the database did not answer; try again")
        }
    }
}

/// The admin API's bearer token (`ADMIN_TOKEN`). Without one configured, the admin routes
/// are off: they answer 403 rather than run unauthenticated.
struct AdminAuthorization: Sendable {
    let token: String?

    func guarded(_ request: Request, _ body: () async throws -> Response) async throws -> Response {
        guard let token else {
            return try HTTPServer.errorResponse(.forbidden, code: "admin_disabled", message: "the admin API is off: set ADMIN_TOKEN to use it")
        }
        let presented = request.headers[.authorization].flatMap { value -> Substring? in
            value.hasPrefix("Bearer ") ? value.dropFirst(7) : nil
        }
        guard let presented, Self.constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
            var response = try HTTPServer.errorResponse(.unauthorized, code: "unauthorized", message: "send the admin token as 'Authorization: Bearer TOKEN'")
            response.headers[.wwwAuthenticate] = "Bearer"
            return response
        }
        return try await body()
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}

extension HTTPField.Name {
    /// Carried into `job_executions.correlation_id` and the logs.
    static let correlationID = Self("X-Correlation-ID")!
}

/// The `X-Correlation-ID` a request carries: at most 200 printable ASCII characters, so
/// what is stored with a run and written to logs is bounded and safe to show. A request with
/// an empty, longer, repeated or non-printable one is refused with 400 rather than run
/// with the value dropped or cut, which would break the caller's tracing silently.
enum CorrelationID {
    static let maximumLength = 200

    static func from(_ request: Request) throws(APIError) -> String? {
        let values = request.headers[values: .correlationID]
        guard let value = values.first else { return nil }
        guard values.count == 1 else {
            throw invalid("send one X-Correlation-ID header, not \(values.count)")
        }
        guard (1...maximumLength).contains(value.utf8.count), value.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
            throw invalid("X-Correlation-ID must be 1-\(maximumLength) printable ASCII characters")
        }
        return value
    }

    private static func invalid(_ message: String) -> APIError {
        APIError(status: .badRequest, code: "invalid_correlation_id", message: message)
    }
}

private final class SyncedFlag: Sendable {
    private let flag = Mutex(false)
    var value: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}
