#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import Database
import Logging
import Observability
import PostgresNIO
import Primitives
import Resilience

/// `fila status`: the state of the whole installation on one screen, from the `ops` views and
/// the health checks `/health/score` runs. Exit status: 0 healthy, 1 degraded, 2 unhealthy.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the queue, workers, circuits, jobs, open alerts and the sending pause.",
        discussion: """
            Read from the ops views and scored as /health/score scores it; while sending is paused \
            or an alert is open it is at least degraded. Exit status: 0 healthy, 1 degraded, \
            2 unhealthy (69 when Postgres cannot be reached), so scripts and cron can act on it. \
            Colour on a terminal, plain text when piped.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print one JSON object (every section, the score and its band) instead of text.")
    var json = false

    @Flag(help: "Refresh every 2 seconds until interrupted.")
    var watch = false

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            // The health checks run at once: a connection each.
            let status = try await withDatabase(context, connections: Self.connections) { client, _ in
                try await Self.openConnections(client, logger: context.logger)
                var status = try await StatusReport.read(client: client, redisURL: context.configuration.redisURL, logger: context.logger)
                while watch {
                    print("\u{1B}[H\u{1B}[2J", terminator: "")
                    print(status.text(colour: isatty(1) != 0), terminator: "")
                    try await Task.sleep(for: .seconds(2))
                    status = try await StatusReport.read(client: client, redisURL: context.configuration.redisURL, logger: context.logger)
                }
                return status
            }
            print(json ? status.json() : status.text(colour: isatty(1) != 0), terminator: json ? "\n" : "")
            switch status.band {
            case .healthy: break
            case .degraded: throw ExitCode(1)
            case .unhealthy: throw ExitCode(2)
            }
        }
    }

    private static let connections = 8

    /// Opens the pool's connections before the checks start their clocks. A check's time
    /// limit is sized for a server's warm pool; this process starts with none, and logging
    /// in eight times at once on a loaded machine can take longer than a limit, which
    /// would score the installation by how long `fila status` took to connect.
    private static func openConnections(_ client: PostgresClient, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<connections {
                group.addTask { _ = try await PostgresProbe.ping(client: client, logger: logger) }
            }
            try await group.waitForAll()
        }
    }
}
