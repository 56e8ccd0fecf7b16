#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
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
            let status = try await withDatabase(context, connections: 8) { client, _ in
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
}
