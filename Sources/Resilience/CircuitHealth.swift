#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Observability
import PostgresNIO
import Primitives

/// The health checks of the circuit breakers (T02.1, T02.5) and of the optional Redis.
public enum CircuitHealth {
    /// `circuits:state`: one node per circuit, its worst state across live processes
    /// (an override wins). OPEN, forced or not, is `fail`, since nothing goes out through
    /// that provider; HALF_OPEN is `warn`, a probe is deciding; CLOSED (forced too) passes.
    public static func states(client: PostgresClient, logger: Logger) -> HealthCheck {
        HealthCheck(component: "circuits", measurement: "state", componentType: .component, nodes: {
            try await CircuitReport.currentStates(client: client, logger: logger).map(observation)
        })
    }

    static func observation(_ status: CircuitStatus) -> HealthObservation {
        let state = status.worstState
        var byState: [String: JSONValue] = [:]
        for (state, count) in status.processesByState { byState[state.rawValue] = .integer(count) }
        return HealthObservation(
            status: healthStatus(state),
            componentID: status.circuit,
            observedValue: .string(state.rawValue),
            output: state == .closed ? nil : "circuit \(status.circuit) is \(state.rawValue)",
            details: [
                "processes_by_state": .object(byState),
                "override": status.override.map { JSONValue.string($0.rawValue) } ?? .null,
                "last_change": status.lastChange.map { JSONValue.string($0.formatted(.iso8601)) } ?? .null,
            ]
        )
    }

    /// The status health reports for a circuit in `state`.
    public static func healthStatus(_ state: CircuitState) -> HealthStatus {
        switch state {
        case .closed, .forcedClosed: .pass
        case .halfOpen: .warn
        case .open, .forcedOpen: .fail
        }
    }
}

/// The Redis the rate limiter may use: reachable and answering PING.
public enum RedisHealth {
    /// `redis:responseTime`: a fresh connection and a PING, in milliseconds. A fresh
    /// connection rather than the rate limiter's own, so the check sees what a restarted
    /// process would see and never queues behind the limiter's commands.
    public static func ping(url: RedisURL, timeLimit: Duration = .seconds(1)) -> HealthCheck {
        HealthCheck(component: "redis", measurement: "responseTime", componentType: .datastore, timeLimit: timeLimit) {
            let start = ContinuousClock.now
            let connection = try await RedisConnection.connect(to: url, connectTimeout: timeLimit)
            let reply: RESPValue
            do {
                reply = try await connection.send(["PING"])
            } catch {
                await connection.close()
                throw error
            }
            await connection.close()
            let elapsed = ContinuousClock.now - start
            guard case .simpleString("PONG") = reply else {
                return HealthObservation(status: .fail, output: "Redis did not answer PING with PONG")
            }
            return HealthObservation(status: .pass, observedValue: .integer(Int(elapsed.seconds * 1000)), observedUnit: "ms")
        }
    }
}
