#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import PostgresNIO
import Primitives

/// The jobs a process knows, by name, and their `job_definitions` rows.
public struct JobCatalog: Sendable {
    public let jobs: [JobDefinition]
    private let byName: [String: JobDefinition]

    /// Refuses duplicate or malformed names: a programming error, caught at start-up.
    public init(_ jobs: [JobDefinition]) throws(ScheduleError) {
        var byName: [String: JobDefinition] = [:]
        for job in jobs {
            guard JobDefinition.isValidName(job.name) else { throw ScheduleError("job name '\(job.name)' must be lowercase letters, digits and dashes") }
            guard byName[job.name] == nil else { throw ScheduleError("two jobs are named \(job.name)") }
            if case .every(let seconds) = job.schedule, seconds <= 0 {
                throw ScheduleError("job \(job.name) runs every \(seconds) seconds; the interval must be positive")
            }
            byName[job.name] = job
        }
        self.jobs = jobs
        self.byName = byName
    }

    public subscript(name: String) -> JobDefinition? { byName[name] }

    /// Upserts every job's row. Code owns the schedule, description and limits; the
    /// operator owns `enabled`, which a sync never touches. `next_run_at` is kept unless the
    /// schedule changed. Schedulers sync with `overwrite` (they are the ones that run the
    /// schedule); the API and `fila job run` only add missing rows, so a CLI started with
    /// another TZ or version cannot move the schedulers' slots.
    public func sync(client: PostgresClient, overwrite: Bool = true, logger: Logger) async throws {
        let now = try await client.query("SELECT now()", logger: logger).collect().first!.decode(Date.self)
        for job in jobs {
            let interval = job.schedule.typicalInterval(around: now)
            let lateAfter = job.lateAfter ?? interval * 2
            try await client.query(
                """
                INSERT INTO job_definitions (name, schedule, time_zone, description, sla_seconds, late_after_seconds, timeout_seconds, next_run_at)
                VALUES (\(job.name), \(job.schedule.description), \(job.schedule.timeZone?.identifier ?? "UTC"), \(job.description),
                        \(Self.wholeSeconds(job.sla)), \(Self.wholeSeconds(lateAfter)), \(Self.wholeSeconds(job.timeout)),
                        \(job.schedule.nextSlot(after: now)))
                ON CONFLICT (name) DO UPDATE
                   SET schedule = excluded.schedule, time_zone = excluded.time_zone, description = excluded.description,
                       sla_seconds = excluded.sla_seconds, late_after_seconds = excluded.late_after_seconds,
                       timeout_seconds = excluded.timeout_seconds, synced_at = now(),
                       next_run_at = CASE WHEN (job_definitions.schedule, job_definitions.time_zone) = (excluded.schedule, excluded.time_zone)
                                               AND job_definitions.next_run_at IS NOT NULL
                                          THEN job_definitions.next_run_at ELSE excluded.next_run_at END
                 WHERE \(overwrite)
                """,
                logger: logger
            )
        }
    }

    static func wholeSeconds(_ duration: Duration) -> Int32 {
        Int32(max(1, min(Double(Int32.max), duration.seconds.rounded(.up))))
    }
}
