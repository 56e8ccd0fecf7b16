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

    /// The pool first and the heartbeat second, so they stop last; alert delivery and the
    /// alert rules in every process, stopping after everything that raises alerts; the
    /// worker last, so it drains first.
    @Test func eachCommandRunsItsRolesServicesInOrder() throws {
        let common = ["postgres", "heartbeat", "alerts", "alert-rules"]
        #expect(try serviceNames([.api]) == common + ["http"])
        #expect(try serviceNames([.scheduler]) == common + ["scheduler"])
        #expect(try serviceNames([.worker]) == common + ["listener", "sending-pause", "worker"])
        #expect(try serviceNames([.api, .worker, .scheduler]) == common + ["http", "scheduler", "listener", "sending-pause", "worker"])
    }

    @Test func aWorkerWithoutASenderIsAConfigurationError() throws {
        #expect(throws: ConfigurationError.self) { try serviceNames([.worker], sender: nil) }
        #expect(throws: ConfigurationError.self) { try serviceNames([.api, .worker, .scheduler], sender: nil) }
        #expect(try serviceNames([.api], sender: nil) == ["postgres", "heartbeat", "alerts", "alert-rules", "http"])
    }

    /// The kinds worker_heartbeats has always had: `fila all` is `all`.
    @Test func heartbeatKinds() {
        #expect(ProcessRoles.api.heartbeatKind == .api)
        #expect(ProcessRoles.worker.heartbeatKind == .worker)
        #expect(ProcessRoles.scheduler.heartbeatKind == .scheduler)
        #expect(([.api, .worker, .scheduler] as ProcessRoles).heartbeatKind == .all)
    }
}
