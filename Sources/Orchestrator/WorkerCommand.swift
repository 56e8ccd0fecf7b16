import ArgumentParser
import Queue

/// `fila worker`.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Claim and send queued messages until SIGTERM or SIGINT.",
        discussion: """
            Run as many as you like, on any machines that reach the database: rows are claimed \
            with FOR UPDATE SKIP LOCKED, so workers never block each other. Each keeps at most \
            --concurrency messages in flight and wakes on NOTIFY, polling every \
            --poll-interval-ms in case a notification is lost. On SIGTERM it stops claiming, \
            finishes in-flight sends within the shutdown timeout and hands back the rest \
            without spending an attempt.

            A sender must be chosen explicitly (--sender or FILA_SENDER): `whatsapp` sends \
            through Evolution API and/or Z-API (EVOLUTION_* and ZAPI_* variables), each behind \
            a circuit breaker, within each doctor's daily budget; `sandbox` sends nothing and \
            succeeds (FILA_SANDBOX_DELAY_MS, FILA_SANDBOX_FAILURE_RATE and FILA_SANDBOX_RECORD \
            tune it). While every provider's circuit is open the worker claims nothing.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var worker: WorkerOptions

    func run() async throws {
        try await ProcessAssembly.run([.worker], global: global, worker: worker)
    }
}

/// The worker's options, shared by `fila worker` and `fila all`.
struct WorkerOptions: ParsableArguments {
    @Option(help: "The most messages in flight at once.")
    var concurrency = 50

    @Option(help: "The most messages claimed per statement.")
    var batch = 100

    @Option(name: .customLong("poll-interval-ms"), help: "How often to look for due messages without a notification.")
    var pollIntervalMilliseconds = 1000

    @Option(help: "Where messages go: whatsapp or sandbox. Default: $FILA_SENDER.")
    var sender: String?

    func validate() throws {
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be 1-10000") }
        guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be 1-10000") }
        guard (10...600_000).contains(pollIntervalMilliseconds) else { throw ValidationError("--poll-interval-ms must be 10-600000") }
    }

    /// The worker loop's configuration from these options.
    func configuration(drainTimeout: Duration) -> Worker.Configuration {
        .init(
            concurrency: concurrency,
            batchSize: batch,
            pollInterval: .milliseconds(pollIntervalMilliseconds),
            drainTimeout: drainTimeout
        )
    }
}
