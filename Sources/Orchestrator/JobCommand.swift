#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import Database
import Jobs
import Logging
import PostgresNIO
import Queue

/// `fila job list | run NAME | history NAME`.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract: "List the periodic jobs, run one now, or show a job's history.",
        subcommands: [List.self, Run.self, History.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the jobs: schedule, last run, next run and state (ok, late, running_over_sla, disabled, never_run)."
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingErrors {
                let context = try CommandContext(options: global)
                try await withDatabase(context) { client, _ in
                    let jobs = try await JobReport.list(client: client, logger: context.logger)
                    var rows = [["JOB", "SCHEDULE", "STATE", "LAST RUN", "LAST STATUS", "NEXT RUN"]]
                    for job in jobs {
                        rows.append([
                            job.name, job.schedule, job.state.rawValue, job.lastStartedAt.map(timestamp) ?? "-",
                            job.lastStatus ?? "-", job.enabled ? (job.nextRunAt.map(timestamp) ?? "-") : "-",
                        ])
                    }
                    print(table(rows), terminator: "")
                    if jobs.isEmpty { print("no jobs yet: they are registered when a scheduler, API or `fila job run` first starts") }
                }
            }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a job now, in this process, and print how it ended.",
            discussion: """
                The run is a job_executions row like any other (triggered_by = cli). Exit status: \
                0 success, 1 failed or timed out, 64 unknown job, 75 a run of the job is still going.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The job's name (see `fila job list`).")
        var name: String

        func run() async throws {
            try await reportingErrors {
                let context = try CommandContext(options: global)
                let catalog = JobsAssembly.catalog(configuration: context.configuration)
                guard let job = catalog[name] else {
                    printError("fila: no job named \(TerminalText.quoted(name)); jobs: \(catalog.jobs.map(\.name).sorted().joined(separator: ", "))")
                    throw ExitCode(FilaExitCode.usage)
                }
                try await withDatabase(context) { client, url in
                    try await catalog.sync(client: client, overwrite: false, logger: context.logger)
                    let identity = ProcessIdentity(kind: .cli, version: FilaVersion.current)
                    let heartbeat = HeartbeatService(client: client, identity: identity, stats: ProcessStats(), logger: context.logger)
                    // This process is the run's owner while it works: it heart-beats, so a
                    // scheduler can tell if it dies. The first beat comes before the run, so
                    // the run's owner is never unknown to a scheduler.
                    try await heartbeat.beat()
                    let outcome = try await FilaServices.whileBeating(heartbeat, logger: context.logger) {
                        try await JobRunner(client: client, lockURL: url, workerID: identity.id).runNow(job, trigger: .cli, logger: context.logger)
                    }
                    switch outcome {
                    case .abandoned:
                        printError("fila: the run of \(name) was failed by a scheduler before it started (see `fila job history \(name)`)")
                        throw ExitCode(FilaExitCode.failure)
                    case .alreadyRunning:
                        printError("fila: a run of \(name) is still going; try again when it ends")
                        throw ExitCode(FilaExitCode.temporaryFailure)
                    case .finished(let execution):
                        let duration = execution.durationMs.map { "\($0) ms" } ?? "-"
                        print("\(name): \(execution.status.rawValue) in \(duration)")
                        if let result = execution.result { print(TerminalText.escaped(result.text, limit: TerminalText.longValue)) }
                        if let error = execution.error {
                            printError("fila: \(name) \(execution.status.rawValue): \(TerminalText.escaped(error, limit: TerminalText.longValue))")
                        }
                        if execution.status != .success { throw ExitCode(FilaExitCode.failure) }
                    }
                }
            }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a job's latest executions, newest first.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The job's name.")
        var name: String

        @Option(help: "How many executions.")
        var limit = 20

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be 1-1000") }
        }

        func run() async throws {
            try await reportingErrors {
                let context = try CommandContext(options: global)
                try await withDatabase(context) { client, _ in
                    guard try await !JobReport.list(client: client, name: name, logger: context.logger).isEmpty else {
                        printError("fila: no job named \(TerminalText.quoted(name)) in job_definitions")
                        throw ExitCode(FilaExitCode.usage)
                    }
                    var rows = [["SCHEDULED FOR", "STATUS", "BY", "DURATION", "RESULT"]]
                    for execution in try await JobReport.history(client: client, name: name, limit: limit, logger: context.logger) {
                        rows.append([
                            timestamp(execution.scheduledFor), execution.status.rawValue, execution.triggeredBy.rawValue,
                            execution.durationMs.map { "\($0) ms" } ?? "-", execution.error ?? execution.result?.text ?? "-",
                        ])
                    }
                    print(table(rows), terminator: "")
                }
            }
        }
    }
}

/// A client for a one-shot command (`fila job`, `fila status`), running for the duration of
/// `body`, with at most `connections` connections.
func withDatabase<Result: Sendable>(
    _ context: CommandContext, connections: Int = 4, _ body: (PostgresClient, DatabaseURL) async throws -> Result
) async throws -> Result {
    let url = try context.configuration.requireDatabaseURL()
    // One connection first: an unreachable database is exit 69 with one clear line.
    try await url.withConnection(logger: context.logger) { _ in }
    // The pool's own chatter (a lease racing run() at start-up) is not for a CLI's user.
    var poolLogger = context.logger
    poolLogger.logLevel = max(poolLogger.logLevel, .error)
    let client = PostgresClient(configuration: url.clientConfiguration(maximumConnections: connections), backgroundLogger: poolLogger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client, url)
    }
}

private func timestamp(_ date: Date) -> String {
    date.formatted(.iso8601)
}

/// Left-aligned columns separated by two spaces, one line per row. Cells come from the
/// database, where anyone with psql may have written them: each is escaped for the
/// terminal and cut to `cellLimit` characters.
func table(_ rows: [[String]], cellLimit: Int = 200) -> String {
    let rows = rows.map { row in row.map { TerminalText.escaped($0, limit: cellLimit) } }
    guard let first = rows.first else { return "" }
    let widths = (0..<first.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }.joined(separator: "\n") + "\n"
}
