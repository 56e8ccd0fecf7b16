import Jobs
import Logging
import Metrics
import Observability
import Outbound
import PostgresNIO
import Queue

/// Every metric a `fila` process exposes, and how a process's registry is made.
enum FilaMetrics {
    /// Every family, for the `# HELP` lines and the README's table.
    static var descriptors: [MetricDescriptor] {
        SendMetrics.descriptors + QueueGauges.descriptors + JobMetrics.descriptors
            + [AlertDeliveryService.slackAlerts] + HTTPMetricsMiddleware<APIRequestContext>.descriptors
    }

    /// A registry with the project's histogram buckets.
    static func make() -> PrometheusMetrics {
        var buckets: [String: [Duration]] = [SendMetrics.duration.name: SendMetrics.durationBuckets]
        for descriptor in [JobMetrics.duration, JobMetrics.lateness] {
            buckets[descriptor.name] = JobMetrics.buckets
        }
        return PrometheusMetrics(descriptors: descriptors, durationBuckets: buckets)
    }

    /// The queue and heartbeat gauges, read from Postgres at most every 5 s and within 1 s,
    /// so a scrape never hangs on a database that does not answer.
    static func addDatabaseGauges(to metrics: PrometheusMetrics, client: PostgresClient, maximumAge: Duration = .seconds(5), timeLimit: Duration = .seconds(1), logger: Logger) {
        metrics.add(SampledMetrics(source: "postgres", maximumAge: maximumAge, timeLimit: timeLimit) {
            try await QueueGauges.sample(client: client, logger: logger)
        })
    }
}
