import Database
import Logging
import PostgresNIO
import Testing

@testable import Orchestrator

/// What each long-running command runs, in the order it starts them, built without
/// starting anything.
@Suite("Processes assembled from roles")
struct ProcessAssemblyTests {
    private func serviceNames(_ roles: ProcessRoles, sender: String? = "sandbox") throws -> [String] {
        let url = try DatabaseURL("postgres://fila@127.0.0.1:1/fila")
        let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: Logger(label: "test"))
        let worker = try WorkerOptions.parse(sender.map { ["--sender", $0] } ?? [])
        let assembly = try ProcessAssembly(
            roles: roles, worker: roles.contains(.worker) ? worker : nil, client: client, databaseURL: url,
            configuration: FilaConfiguration(), logger: Logger(label: "test")
        )
        return assembly.services.map(\.serviceName)
    }

    /// The pool first and the heartbeat second, so they stop last; the worker last, so it
    /// drains first.
    @Test func eachCommandRunsItsRolesServicesInOrder() throws {
        #expect(try serviceNames([.api]) == ["postgres", "heartbeat", "http"])
        #expect(try serviceNames([.scheduler]) == ["postgres", "heartbeat", "alerts", "scheduler"])
        #expect(try serviceNames([.worker]) == ["postgres", "heartbeat", "listener", "worker"])
        #expect(try serviceNames([.api, .worker, .scheduler]) == ["postgres", "heartbeat", "http", "alerts", "scheduler", "listener", "worker"])
    }

    @Test func aWorkerWithoutASenderIsAConfigurationError() throws {
        #expect(throws: ConfigurationError.self) { try serviceNames([.worker], sender: nil) }
        #expect(throws: ConfigurationError.self) { try serviceNames([.api, .worker, .scheduler], sender: nil) }
        #expect(try serviceNames([.api], sender: nil) == ["postgres", "heartbeat", "http"])
    }

    /// The kinds worker_heartbeats has always had: `fila all` is `all`.
    @Test func heartbeatKinds() {
        #expect(ProcessRoles.api.heartbeatKind == .api)
        #expect(ProcessRoles.worker.heartbeatKind == .worker)
        #expect(ProcessRoles.scheduler.heartbeatKind == .scheduler)
        #expect(([.api, .worker, .scheduler] as ProcessRoles).heartbeatKind == .all)
    }
}
