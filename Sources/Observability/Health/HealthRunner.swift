#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Primitives

/// Runs health checks at once, each under its own time limit, so one hung dependency costs
/// its limit and no more: the report is ready after the slowest limit, never later.
///
/// ```swift
/// let report = await HealthRunner.run([postgresPing, queueMetrics], logger: logger)
/// // report.httpStatusCode: 503 when a check failed or timed out
/// ```
public enum HealthRunner {
    public static func run(_ checks: [HealthCheck], logger: Logger) async -> HealthReport {
        await withTaskGroup(of: (String, [HealthEntry]).self) { group in
            for check in checks {
                group.addTask { (check.key, await run(check, logger: logger)) }
            }
            var results: [String: [HealthEntry]] = [:]
            for await (key, entries) in group {
                results[key, default: []] += entries
            }
            return HealthReport(checks: results)
        }
    }

    /// One check's entries. A failure's detail goes to the log only: the body is public and
    /// an error may name a host or a user.
    static func run(_ check: HealthCheck, logger: Logger) async -> [HealthEntry] {
        let observations: [HealthObservation]
        do {
            // Abandoned on timeout, not awaited: a call stuck behind a lock may ignore
            // cancellation, and the endpoint must answer anyway.
            observations = try await withTimeLimit(check.timeLimit, onTimeout: { HealthCheckTimedOut() }) {
                try await check.observe()
            }
        } catch is HealthCheckTimedOut {
            logger.warning("health check timed out", metadata: ["health.check": .string(check.key), "health.time_limit": .string("\(check.timeLimit)")])
            observations = [HealthObservation(status: .fail, output: "timed out after \(Self.milliseconds(check.timeLimit)) ms")]
        } catch {
            logger.warning("health check failed", metadata: ["health.check": .string(check.key), "error": .string(String(reflecting: error))])
            observations = [HealthObservation(status: .fail, output: "the check failed; the server's log says why")]
        }
        let now = Date()
        return observations.map { HealthEntry(observation: $0, componentType: check.componentType, time: now) }
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}

private struct HealthCheckTimedOut: Error {}
