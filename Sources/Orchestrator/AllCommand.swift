import ArgumentParser
import Logging
import PostgresNIO

/// `fila all`: the API, a worker and the scheduler in one process, sharing one pool.
struct AllCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Run the HTTP API, a worker and the job scheduler in one process until SIGTERM or SIGINT.",
        discussion: """
            For a single machine or development (ops/dev runs it with the sandbox sender). \
            It behaves exactly like `fila serve`, `fila worker` and `fila scheduler` run side \
            by side; in \
            production you may prefer to scale them separately. Takes the worker's options; \
            the sender must be chosen explicitly, as for `fila worker`.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var worker: WorkerOptions

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let configuration = context.configuration
            let (databaseURL, client) = try context.makeClient()
            let workerServices = try worker.services(kind: .all, client: client, databaseURL: databaseURL, configuration: configuration, logger: context.logger)
            let identity = workerServices.identity
            let application = HTTPServer.makeApplication(
                configuration: configuration,
                jobs: JobsAssembly.api(client: client, url: databaseURL, identity: identity, configuration: configuration, logger: context.logger),
                logger: context.logger
            )
            // Stopped in reverse: the worker drains first, with most of the shutdown time;
            // then the scheduler's runs end or are cancelled; HTTP stays answerable until
            // then; the heartbeat says `stopped` last.
            try await FilaServices.run(
                [
                    .init(service: client, serviceName: "postgres"),
                    workerServices.heartbeat,
                    .init(service: application, serviceName: "http"),
                    .init(service: JobsAssembly.scheduler(client: client, url: databaseURL, identity: identity, configuration: configuration, logger: context.logger), serviceName: "scheduler"),
                ]
                    + workerServices.services,
                configuration: configuration,
                logger: context.logger
            )
        }
    }
}
