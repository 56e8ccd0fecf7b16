import Database
import Logging
import Observability
import PostgresNIO

/// The health checks of the periodic jobs: someone must run them, and on time.
public enum SchedulerHealth {
    /// `scheduler:alive`: how many `scheduler` or `all` processes are alive; `fail` at zero,
    /// since then no check, cleanup or rescue runs at all.
    public static func liveSchedulers(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "scheduler", measurement: "alive", componentType: .component) {
            let count = try await LiveProcesses.count(kinds: [.scheduler, .all], client: client, logger: logger)
            return HealthObservation(
                status: count > 0 ? .pass : .fail,
                observedValue: .integer(count),
                observedUnit: "processes",
                output: count > 0 ? nil : "no live scheduler: periodic jobs are not running"
            )
        }
    }

    /// `scheduler:lateJobs`: enabled jobs whose last success is older than twice their
    /// interval; `warn` when there is any (named, so a person knows which).
    public static func lateJobs(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "scheduler", measurement: "lateJobs", componentType: .component) {
            let late = try await JobReport.list(client: client, logger: logger).filter { $0.state == .late }.map(\.name).sorted()
            return HealthObservation(
                status: late.isEmpty ? .pass : .warn,
                observedValue: .integer(late.count),
                observedUnit: "jobs",
                output: late.isEmpty ? nil : "late: " + late.joined(separator: ", ")
            )
        }
    }
}
