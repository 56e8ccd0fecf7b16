#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HTTPTypes
import Hummingbird
import Jobs
import Logging
import Observability
import PostgresNIO
import Synchronization

/// `/jobs`: list jobs, read a job's executions, and run one now (the seed's
/// `POST /jobs/resetar-fila-travada` and friends). Every route needs the admin token.
struct JobsAPI: Sendable {
    let client: PostgresClient
    let catalog: JobCatalog
    let runner: JobRunner
    let admin: AdminAuthorization<APIRequestContext>
    let logger: Logger
    /// Whether this process has added its jobs to job_definitions (insert-only, once).
    private let synced = SyncedFlag()

    init(client: PostgresClient, catalog: JobCatalog, runner: JobRunner, admin: AdminAuthorization<APIRequestContext>, logger: Logger) {
        self.client = client
        self.catalog = catalog
        self.runner = runner
        self.admin = admin
        self.logger = logger
    }

    func register(on router: Router<APIRequestContext>) {
        let jobs = router.group("/jobs")
            .add(middleware: admin)
            .add(middleware: DatabaseFailureMiddleware(logger: logger))
        jobs.get { _, _ in
            try await syncCatalog()
            return ["jobs": try await JobReport.list(client: client, logger: logger)]
        }
        jobs.get(":name/executions") { request, context in
            let name = context.parameters.get("name") ?? ""
            let limit = try Self.limit(request)
            try await syncCatalog()
            guard try await !JobReport.list(client: client, name: name, logger: logger).isEmpty else {
                throw APIError(status: .notFound, code: "unknown_job", message: "no job named '\(name)'")
            }
            return ["executions": try await JobReport.history(client: client, name: name, limit: limit, logger: logger)]
        }
        jobs.post(":name") { request, context in
            let name = context.parameters.get("name") ?? ""
            guard let job = catalog[name] else {
                throw APIError(
                    status: .notFound, code: "unknown_job",
                    message: "no job named '\(name)'; jobs: \(catalog.jobs.map(\.name).sorted().joined(separator: ", "))"
                )
            }
            try await syncCatalog()
            // The request's id (CorrelationMiddleware): stored on the run and in its log lines.
            switch try await runner.runNow(job, trigger: .http, correlationID: Correlation.current, logger: logger) {
            case .alreadyRunning:
                throw APIError(status: .conflict, code: "already_running", message: "a run of \(name) is still going; try again when it ends")
            case .abandoned:
                throw APIError(status: .serviceUnavailable, code: "run_abandoned", message: "the run was failed by a scheduler before it started; try again")
            case .finished(let execution):
                return JSONResponse(execution)
            }
        }
    }

    /// `?limit=N`, 1-1000, default 20.
    private static func limit(_ request: Request) throws(APIError) -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return 20 }
        guard let value = Int(text), (1...1000).contains(value) else {
            throw APIError(status: .badRequest, code: "invalid_limit", message: "limit must be a whole number from 1 to 1000")
        }
        return value
    }

    /// Adds this process's jobs to job_definitions before its first query needs them there.
    private func syncCatalog() async throws {
        guard !synced.value else { return }
        try await catalog.sync(client: client, overwrite: false, logger: logger)
        synced.set()
    }
}

/// A failure of a `/jobs` handler that is not an HTTP answer is the database's: a 503 with
/// a reason, never a dropped connection.
struct DatabaseFailureMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            throw error
        } catch {
            logger.error("jobs API: database call failed", metadata: ["error": .string(String(reflecting: error))])
            throw APIError(status: .serviceUnavailable, code: "database_unavailable", message: "the database did not answer; try again")
        }
    }
}

/// The admin API's bearer token (`ADMIN_TOKEN`), checked before the routes it guards run.
/// Without one configured, the admin routes are off: they answer 403 rather than run
/// unauthenticated.
struct AdminAuthorization<Context: RequestContext>: RouterMiddleware {
    let token: String?
    /// Whose token it is, for the answers: `admin` (ADMIN_TOKEN) or `producer` (PRODUCER_TOKEN).
    var role = "admin"
    var variable = "ADMIN_TOKEN"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token else {
            throw APIError(status: .forbidden, code: "\(role)_disabled", message: "the \(role) API is off: set \(variable) to use it")
        }
        let presented = request.headers[.authorization].flatMap { value -> Substring? in
            value.hasPrefix("Bearer ") ? value.dropFirst(7) : nil
        }
        guard let presented, constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
            throw APIError(
                status: .unauthorized, code: "unauthorized",
                message: "send the \(role) token as 'Authorization: Bearer TOKEN'", headers: [.wwwAuthenticate: "Bearer"]
            )
        }
        return try await next(request, context)
    }
}

/// Compares two secrets in a time that does not depend on where they first differ.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(a.count == b.count ? 0 : 1)
    for index in 0..<max(a.count, b.count) {
        difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
    }
    return difference == 0
}

private final class SyncedFlag: Sendable {
    private let flag = Mutex(false)
    var value: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}
