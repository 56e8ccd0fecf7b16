import Metrics
import Observability

/// What the job runner counts: runs by job and status, their duration, and how late each
/// started after its slot.
public final class JobMetrics: Sendable {
    public static let runs = MetricDescriptor(
        "wa_job_runs_total", .counter, labels: ["job", "status"],
        help: "Job runs this process ran, by job and how they ended (success, failed, timeout)."
    )
    public static let duration = MetricDescriptor(
        "wa_job_duration_seconds", .histogram, labels: ["job"],
        help: "How long job runs took (job_executions.duration_ms)."
    )
    public static let lateness = MetricDescriptor(
        "wa_job_lateness_seconds", .histogram, labels: ["job"],
        help: "How long after its scheduled slot a run started (0 for runs asked for by hand)."
    )
    public static let descriptors = [runs, duration, lateness]

    /// Jobs run from milliseconds (a check) to minutes (archiving); a slot may start late by
    /// up to the scheduler's catch-up.
    public static let buckets: [Duration] = [
        .milliseconds(10), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5),
        .seconds(15), .seconds(60), .seconds(300), .seconds(900),
    ]

    private let runCounters: MetricFamily<Counter>
    private let durations: MetricFamily<Metrics.Timer>
    private let latenesses: MetricFamily<Metrics.Timer>

    /// Made from `factory`, by default the task-local or global one at the time of creation.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        runCounters = .counter(Self.runs, factory: factory)
        durations = .histogram(Self.duration, factory: factory)
        latenesses = .histogram(Self.lateness, factory: factory)
    }

    /// Records a run as its row ended, with the database's own timestamps.
    public func record(_ row: JobExecution) {
        runCounters(row.jobName, row.status.rawValue).increment()
        if let milliseconds = row.durationMs {
            durations(row.jobName).record(duration: .milliseconds(milliseconds))
        }
        if let startedAt = row.startedAt {
            let late = max(0, startedAt.timeIntervalSince(row.scheduledFor))
            latenesses(row.jobName).record(duration: .milliseconds(Int64(late * 1000)))
        }
    }
}
