import ArgumentParser
import Database
import Hummingbird
import Logging
import PostgresNIO
import Queue
import ServiceLifecycle

/// `fila serve`.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the HTTP API (health, jobs) until SIGTERM or SIGINT.",
        discussion: """
            Listens on $HOST:$PORT (default 0.0.0.0:8080). GET /health answers 200 while the
            process is alive; it does not depend on Postgres, so a database outage never makes
            an orchestrator restart the API. Run `fila migrate` first.

            With ADMIN_TOKEN set (sent as 'Authorization: Bearer TOKEN'): GET /jobs lists the
            jobs with their last and next runs and SLA state, GET /jobs/NAME/executions?limit=N
            their history, and POST /jobs/NAME runs one now and returns its job_executions row
            (404 unknown job, 409 a run still going, 401 without the token).
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let configuration = context.configuration
            let (databaseURL, client) = try context.makeClient()
            // Every process is visible in worker_heartbeats, the API included (it runs jobs
            // on POST /jobs/NAME).
            let identity = ProcessIdentity(kind: .api, version: FilaVersion.current)
            let heartbeat = HeartbeatService(client: client, identity: identity, stats: ProcessStats(), logger: context.logger)
            let application = HTTPServer.makeApplication(
                configuration: configuration,
                jobs: JobsAssembly.api(client: client, url: databaseURL, identity: identity, configuration: configuration, logger: context.logger),
                logger: context.logger
            )
            try await FilaServices.run(
                [
                    .init(service: client, serviceName: "postgres"),
                    .init(service: heartbeat, serviceName: "heartbeat"),
                    .init(service: application, serviceName: "http"),
                ],
                configuration: configuration,
                logger: context.logger
            )
        }
    }
}

/// Runs a process's long-lived services in one group, started in order and stopped in
/// reverse. SIGTERM and SIGINT start a graceful shutdown; whatever is still running after
/// `shutdownTimeout` is cancelled.
enum FilaServices {
    static func run(
        _ services: [ServiceGroupConfiguration.ServiceConfiguration],
        configuration: FilaConfiguration,
        logger: Logger
    ) async throws {
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        // Headroom for a loaded machine; every service bounds its own last writes.
        groupConfiguration.maximumCancellationDuration = .seconds(10)
        logger.info("starting", metadata: ["fila.version": .string(FilaVersion.current), "fila.services": .string(services.map(\.serviceName).joined(separator: ","))])
        try await ServiceGroup(configuration: groupConfiguration).run()
        logger.info("stopped")
    }
}
