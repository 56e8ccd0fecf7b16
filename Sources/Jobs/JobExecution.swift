#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PostgresNIO
import Primitives

/// A `job_executions` row.
public struct JobExecution: Sendable, Codable, Hashable {
    public enum Status: String, Sendable, Codable, CaseIterable {
        case pending, running, success, failed, timeout, skipped
    }

    public let id: UUID
    public let jobName: String
    public let scheduledFor: Date
    public let startedAt: Date?
    public let finishedAt: Date?
    public let status: Status
    public let durationMs: Int64?
    public let result: JSONValue?
    public let error: String?
    public let triggeredBy: JobTrigger
    public let workerID: String?
    public let correlationID: String?

    enum CodingKeys: String, CodingKey {
        case id
        case jobName = "job_name"
        case scheduledFor = "scheduled_for"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case status
        case durationMs = "duration_ms"
        case result, error
        case triggeredBy = "triggered_by"
        case workerID = "worker_id"
        case correlationID = "correlation_id"
    }

    /// `SELECT … FROM job_executions e` with the columns in the order `init(row:)` reads
    /// them; use as `"\(unescaped: JobExecution.select) WHERE …"`.
    static let select = """
        SELECT e.id, e.job_name, e.scheduled_for, e.started_at, e.finished_at, e.status, e.duration_ms,
               e.result::text, e.error, e.triggered_by, e.worker_id, e.correlation_id
          FROM job_executions e
        """

    /// Ids as Postgres prints them (lowercase), so JSON and psql agree.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(jobName, forKey: .jobName)
        try container.encode(scheduledFor, forKey: .scheduledFor)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encode(finishedAt, forKey: .finishedAt)
        try container.encode(status, forKey: .status)
        try container.encode(durationMs, forKey: .durationMs)
        try container.encode(result, forKey: .result)
        try container.encode(error, forKey: .error)
        try container.encode(triggeredBy, forKey: .triggeredBy)
        try container.encode(workerID, forKey: .workerID)
        try container.encode(correlationID, forKey: .correlationID)
    }

    init(row: PostgresRow) throws {
        let (id, jobName, scheduledFor, startedAt, finishedAt, status, durationMs, result, error, triggeredBy, workerID, correlationID) =
            try row.decode((UUID, String, Date, Date?, Date?, String, Int64?, String?, String?, String, String?, String?).self)
        self.id = id
        self.jobName = jobName
        self.scheduledFor = scheduledFor
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.status = Status(rawValue: status) ?? .failed
        self.durationMs = durationMs
        self.result = result.flatMap { JSONValue(parsing: $0) }
        self.error = error
        self.triggeredBy = JobTrigger(rawValue: triggeredBy) ?? .psql
        self.workerID = workerID
        self.correlationID = correlationID
    }
}
