import Database
import FilaTestSupport
import Foundation
import Jobs
import Logging
import Metrics
import Observability
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// Job runs are counted by job and status, with their duration and lateness, through the
/// factory in effect when the runner was made (here a task-local one, this test's alone).
@Suite("Job metrics", .migratedDatabase, .timeLimit(.minutes(2)))
struct JobMetricsTests {
    struct Boom: Error {}

    @Test func runsAreCountedByJobAndStatus() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let good = JobDefinition(name: "conta-bem", schedule: .every(seconds: 60), description: "test job", sla: .seconds(5)) { _ in ["ok": true] }
        let bad = JobDefinition(name: "conta-mal", schedule: .every(seconds: 60), description: "test job", sla: .seconds(5)) { _ in throw Boom() }
        try await JobCatalog([good, bad]).sync(client: client, logger: logger)
        try await client.query("INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('cli-1', 'cli', 't', 1, 't')", logger: logger)

        let metrics = PrometheusMetrics(descriptors: JobMetrics.descriptors)
        let runner = withMetricsFactory(metrics.factory) { JobRunner(client: client, lockURL: url, workerID: "cli-1") }
        for job in [good, good, bad] {
            guard case .finished = try await runner.runNow(job, trigger: .cli, logger: logger) else {
                Issue.record("\(job.name) did not run")
                return
            }
        }
        let text = await metrics.exposition(logger: logger)
        let lines = Set(text.split(separator: "\n").map(String.init))
        #expect(lines.contains(#"wa_job_runs_total{job="conta-bem",status="success"} 2"#))
        #expect(lines.contains(#"wa_job_runs_total{job="conta-mal",status="failed"} 1"#))
        #expect(lines.contains(#"wa_job_duration_seconds_count{job="conta-bem"} 2"#))
        // Run by hand: started in its own slot's instant, so not late at all.
        #expect(lines.contains(#"wa_job_lateness_seconds_bucket{job="conta-mal",le="0.01"} 1"#))
        #expect(lines.contains("# HELP wa_job_runs_total \(JobMetrics.runs.help)"))
    }
}
