import ArgumentParser

/// `fila`: the root command and the executable's entry point. Everything it does lives in
/// testable types; this only dispatches.
@main
struct FilaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fila",
        abstract: "Postgres-backed message queue and job runner for WhatsApp sends.",
        discussion: """
            Postgres is the queue, the lock manager, the heartbeat store and the audit log.
            Run `fila migrate` once per release, then any number of `fila serve`,
            `fila worker` and `fila scheduler` processes (or `fila all`, all three in one).

            Exit codes: 0 success, 1 failure, 64 usage error, 65 bad data (a changed
            migration, rejected input lines), 69 database unreachable, 75 try again later,
            78 configuration error.
            """,
        version: FilaVersion.current,
        subcommands: [MigrateCommand.self, ServeCommand.self, WorkerCommand.self, SchedulerCommand.self, AllCommand.self, JobCommand.self, EnqueueCommand.self, StatusCommand.self, VersionCommand.self]
    )
}

/// Options every command accepts; each overrides its environment variable.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: ArgumentHelp("Postgres URL.", discussion: "Default: $DATABASE_URL.", valueName: "url"))
    var databaseURL: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", discussion: "Default: $LOG_LEVEL, else info.", valueName: "level"))
    var logLevel: String?

    @Option(help: ArgumentHelp("json or text.", discussion: "Default: $LOG_FORMAT, else text.", valueName: "format"))
    var logFormat: String?
}

/// `fila version`.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "Print the version of this fila binary."
    )

    func run() {
        print("fila \(FilaVersion.current)")
    }
}
