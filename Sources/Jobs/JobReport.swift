#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import PostgresNIO

/// A job as operators see it: its definition, its last run, when it runs next, and whether
/// it is keeping to its schedule. Served by `GET /jobs` and `fila job list`.
public struct JobStatus: Sendable, Codable, Hashable {
    /// `ok`, `late` (no success for longer than `late_after_seconds`), `running_over_sla`,
    /// `disabled`, or `never_run` (not yet late either).
    public enum State: String, Sendable, Codable {
        case ok, late, runningOverSLA = "running_over_sla", disabled, neverRun = "never_run"
    }

    public let name: String
    public let schedule: String
    public let timeZone: String
    public let description: String
    public let enabled: Bool
    public let slaSeconds: Int
    public let lateAfterSeconds: Int
    public let nextRunAt: Date?
    public let lastStatus: String?
    public let lastStartedAt: Date?
    public let lastFinishedAt: Date?
    public let lastDurationMs: Int64?
    public let lastSuccessAt: Date?
    public let state: State

    enum CodingKeys: String, CodingKey {
        case name, schedule, description, enabled, state
        case timeZone = "time_zone"
        case slaSeconds = "sla_seconds"
        case lateAfterSeconds = "late_after_seconds"
        case nextRunAt = "next_run_at"
        case lastStatus = "last_status"
        case lastStartedAt = "last_started_at"
        case lastFinishedAt = "last_finished_at"
        case lastDurationMs = "last_duration_ms"
        case lastSuccessAt = "last_success_at"
    }
}

/// Read-only questions about jobs, answered from `job_definitions` and `job_executions`.
public enum JobReport {
    /// Every job in `job_definitions`, by name, as the view `ops.jobs` says (psql users see
    /// the same rows); `name` narrows it to one.
    public static func list(client: PostgresClient, name: String? = nil, logger: Logger) async throws -> [JobStatus] {
        let rows = try await client.query(
            """
            SELECT name, schedule, time_zone, description, enabled, sla_seconds, late_after_seconds, next_run_at,
                   last_status, last_started_at, last_finished_at, last_duration_ms, last_success_at, state
              FROM ops.jobs
             WHERE \(name)::text IS NULL OR name = \(name)
             ORDER BY name
            """,
            logger: logger
        )
        var jobs: [JobStatus] = []
        for try await row in rows {
            let t = try row.decode((String, String, String, String, Bool, Int, Int, Date?, String?, Date?, Date?, Int64?, Date?, String).self)
            jobs.append(
                JobStatus(
                    name: t.0, schedule: t.1, timeZone: t.2, description: t.3, enabled: t.4, slaSeconds: t.5, lateAfterSeconds: t.6,
                    nextRunAt: t.7, lastStatus: t.8, lastStartedAt: t.9, lastFinishedAt: t.10, lastDurationMs: t.11, lastSuccessAt: t.12,
                    state: JobStatus.State(rawValue: t.13) ?? .ok
                )
            )
        }
        return jobs
    }

    /// A job's executions, newest slot first.
    public static func history(client: PostgresClient, name: String, limit: Int = 20, logger: Logger) async throws -> [JobExecution] {
        let rows = try await client.query(
            "\(unescaped: JobExecution.select) WHERE e.job_name = \(name) ORDER BY e.scheduled_for DESC, e.created_at DESC LIMIT \(limit)",
            logger: logger
        )
        var executions: [JobExecution] = []
        for try await row in rows {
            executions.append(try JobExecution(row: row))
        }
        return executions
    }
}
