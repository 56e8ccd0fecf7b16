import ArgumentParser
import Database
import Logging
import PostgresNIO
import Primitives
import Queue
import ServiceLifecycle

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
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let configuration = context.configuration
            let (databaseURL, client) = try context.makeClient()
            let parts = try worker.services(kind: .worker, client: client, databaseURL: databaseURL, configuration: configuration, logger: context.logger)
            try await FilaServices.run(
                [.init(service: client, serviceName: "postgres"), parts.heartbeat] + parts.services,
                configuration: configuration,
                logger: context.logger
            )
        }
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

    /// The heartbeat (to start right after `client`, so it stops last), the LISTEN
    /// connection, the sender's own services and the worker loop, and the process identity
    /// they use. Throws when the sender cannot be built from the configuration.
    func services(
        kind: ProcessIdentity.Kind,
        client: PostgresClient,
        databaseURL: DatabaseURL,
        configuration: FilaConfiguration,
        logger: Logger
    ) throws -> (identity: ProcessIdentity, heartbeat: ServiceGroupConfiguration.ServiceConfiguration, services: [ServiceGroupConfiguration.ServiceConfiguration]) {
        let identity = ProcessIdentity(kind: kind, version: FilaVersion.current)
        let sender = try SenderAssembly.make(
            name: sender ?? configuration.sender, configuration: configuration, client: client,
            listenURL: configuration.databaseListenURL ?? databaseURL, identity: identity, logger: logger
        )
        let heartbeat = HeartbeatService(
            client: client, identity: identity, stats: ProcessStats(),
            details: { [sender = sender.sender] in sender.healthDetails() }, logger: logger
        )
        let wake = WakeSignal()
        let worker = Worker(
            configuration: .init(
                concurrency: concurrency,
                batchSize: batch,
                pollInterval: .milliseconds(pollIntervalMilliseconds),
                drainTimeout: configuration.drainTimeout
            ),
            queue: MessageQueue(client: client),
            sender: sender.sender,
            heartbeat: heartbeat,
            wake: wake,
            logger: logger
        )
        return (identity, .init(service: heartbeat, serviceName: "heartbeat"), sender.services + [
            .init(service: QueueListener(url: configuration.databaseListenURL ?? databaseURL, wake: wake, logger: logger), serviceName: "listener"),
            .init(service: worker, serviceName: "worker"),
        ])
    }
}
