#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import PostgresNIO
import Primitives

/// A periodic job: what it is called, when it runs, how long it may take, and what it does.
///
/// ```swift
/// let job = JobDefinition(
///     name: "resetar-fila-travada",
///     schedule: .every(seconds: 900),
///     description: "Returns stuck and orphaned messages to the queue",
///     sla: .seconds(60)
/// ) { context in
///     ["reset": .integer(try await queue.resetStuck(logger: context.logger))]
/// }
/// ```
public struct JobDefinition: Sendable {
    public typealias Handler = @Sendable (JobContext) async throws -> JSONValue

    /// Lowercase letters, digits and dashes: the URL path (`POST /jobs/NAME`) and the
    /// `job_executions.job_name`.
    public let name: String
    public let schedule: JobSchedule
    public let description: String
    /// A run that takes longer is over its SLA (reported, not stopped).
    public let sla: Duration
    /// The job is late when its last success is older than this; default twice its interval.
    public let lateAfter: Duration?
    /// A run still going after this is cancelled and recorded as `timeout`.
    public let timeout: Duration
    public let handler: Handler

    public init(
        name: String,
        schedule: JobSchedule,
        description: String,
        sla: Duration,
        lateAfter: Duration? = nil,
        timeout: Duration = .seconds(600),
        handler: @escaping Handler
    ) {
        self.name = name
        self.schedule = schedule
        self.description = description
        self.sla = sla
        self.lateAfter = lateAfter
        self.timeout = timeout
        self.handler = handler
    }

    /// Whether `name` can be a job name.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 100 else { return false }
        let allowed = { (byte: UInt8) in (97...122).contains(byte) || (48...57).contains(byte) || byte == 45 }
        return first != 45 && name.utf8.allSatisfy(allowed)
    }
}

/// What a running job gets: the database, a logger carrying `job.name` and
/// `job.execution_id`, and the execution's id.
public struct JobContext: Sendable {
    public let client: PostgresClient
    public let logger: Logger
    public let executionID: UUID
    public let jobName: String
}

/// Who asked for a run, as stored in `job_executions.triggered_by`.
public enum JobTrigger: String, Sendable, Codable {
    case scheduler, http, cli, psql
}
