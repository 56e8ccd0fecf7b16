import ArgumentParser
import Database
import Logging
import PostgresNIO
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

            A sender must be chosen explicitly (--sender or FILA_SENDER); the only one so far \
            is `sandbox`, which sends nothing and succeeds (FILA_SANDBOX_DELAY_MS, \
            FILA_SANDBOX_FAILURE_RATE and FILA_SANDBOX_RECORD tune it).
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var worker: WorkerOptions

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let configuration = context.configuration
            let (databaseURL, client) = try context.makeClient()
            let sender = try worker.makeSender(configuration: configuration)
            let parts = worker.services(kind: .worker, client: client, sender: sender, databaseURL: databaseURL, configuration: configuration, logger: context.logger)
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

    @Option(help: "Where messages go: sandbox. Default: $FILA_SENDER.")
    var sender: String?

    func validate() throws {
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be 1-10000") }
        guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be 1-10000") }
        guard (10...600_000).contains(pollIntervalMilliseconds) else { throw ValidationError("--poll-interval-ms must be 10-600000") }
    }

    func makeSender(configuration: FilaConfiguration) throws -> any MessageSender {
        try SenderFactory.make(name: sender ?? configuration.sender, configuration: configuration)
    }

    /// The heartbeat (to start right after `client`, so it stops last), the LISTEN
    /// connection and worker loop, and the process identity they use.
    func services(
        kind: ProcessIdentity.Kind,
        client: PostgresClient,
        sender: any MessageSender,
        databaseURL: DatabaseURL,
        configuration: FilaConfiguration,
        logger: Logger
    ) -> (identity: ProcessIdentity, heartbeat: ServiceGroupConfiguration.ServiceConfiguration, services: [ServiceGroupConfiguration.ServiceConfiguration]) {
        let identity = ProcessIdentity(kind: kind, version: FilaVersion.current)
        let heartbeat = HeartbeatService(client: client, identity: identity, stats: ProcessStats(), logger: logger)
        let wake = WakeSignal()
        let worker = Worker(
            configuration: .init(
                concurrency: concurrency,
                batchSize: batch,
                pollInterval: .milliseconds(pollIntervalMilliseconds),
                drainTimeout: configuration.drainTimeout
            ),
            queue: MessageQueue(client: client),
            sender: sender,
            heartbeat: heartbeat,
            wake: wake,
            logger: logger
        )
        return (identity, .init(service: heartbeat, serviceName: "heartbeat"), [
            .init(service: QueueListener(url: configuration.databaseListenURL ?? databaseURL, wake: wake, logger: logger), serviceName: "listener"),
            .init(service: worker, serviceName: "worker"),
        ])
    }
}

/// Builds the sender a worker was asked for; no sender is ever chosen silently.
enum SenderFactory {
    static let available = ["sandbox"]

    static func make(name: String?, configuration: FilaConfiguration) throws -> any MessageSender {
        guard let name else {
            throw ConfigurationError(
                variable: "FILA_SENDER",
                reason: "is not set: choose where messages go with --sender or FILA_SENDER (available: \(available.joined(separator: ", ")))"
            )
        }
        switch name {
        case "sandbox":
            do {
                return try SandboxSender(configuration: configuration.sandbox)
            } catch {
                throw ConfigurationError(variable: "FILA_SANDBOX_RECORD", reason: "cannot be used: \(error)")
            }
        default:
            throw ConfigurationError(variable: "FILA_SENDER", reason: "is '\(name)'; available: \(available.joined(separator: ", "))")
        }
    }
}
