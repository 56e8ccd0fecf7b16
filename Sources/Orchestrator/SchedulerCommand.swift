import ArgumentParser

/// `fila scheduler`.
struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Run the periodic maintenance jobs on schedule until SIGTERM or SIGINT.",
        discussion: """
            Run as many replicas as you like: each schedule slot runs once across all of them \
            (a unique job_executions row per slot), and two runs of one job never overlap \
            (a transaction-scoped advisory lock). `fila job list` shows the jobs; disable one \
            with `UPDATE job_definitions SET enabled = false WHERE name = '…'`. Cron \
            schedules use $TZ (default America/Sao_Paulo).
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await ProcessAssembly.run([.scheduler], global: global)
    }
}
