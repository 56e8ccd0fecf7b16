import Database
import Jobs
import Logging
import Metrics
import Observability
import Outbound
import PostgresNIO
import Primitives
import Queue
import Resilience
import ServiceLifecycle

/// What a long-running `fila` process does. `fila serve`, `fila worker` and
/// `fila scheduler` each play one role; `fila all` is their union.
struct ProcessRoles: OptionSet, Sendable {
    let rawValue: Int

    /// The HTTP API (health endpoints, jobs, the dashboard).
    static let api = ProcessRoles(rawValue: 1 << 0)
    /// The claim-and-send loop, with its LISTEN connection and its sender.
    static let worker = ProcessRoles(rawValue: 1 << 1)
    /// The periodic jobs on their schedules.
    static let scheduler = ProcessRoles(rawValue: 1 << 2)

    /// The process's `worker_heartbeats.kind`. A process of several roles is `all`, the kind
    /// every liveness check counts as each of them.
    var heartbeatKind: ProcessIdentity.Kind {
        switch self {
        case .api: .api
        case .worker: .worker
        case .scheduler: .scheduler
        default: .all
        }
    }
}

/// One `fila` process built from its roles: the pool, one identity and heartbeat shared by
/// every role, and each role's services, run in one group until SIGTERM or SIGINT.
///
/// ```swift
/// try await ProcessAssembly.run([.api, .worker, .scheduler], global: global, worker: worker)
/// ```
struct ProcessAssembly {
    /// In start order; the group stops them in reverse. The pool starts first and the
    /// heartbeat second, so the heartbeat writes its `stopped` row after every role has
    /// stopped; then HTTP, which stays answerable until the scheduler's runs and the
    /// worker's drain, started after it, have ended; the worker is last, so it drains first
    /// and with most of the shutdown time.
    let services: [ServiceGroupConfiguration.ServiceConfiguration]

    /// Builds the services of `roles`. `worker` is required with the worker role. Throws
    /// when the worker's sender cannot be built from the configuration. The components count
    /// through the metrics factory in effect now (``run(_:global:worker:)`` bootstraps
    /// `metrics`'s globally first); `metrics` serves them, with the database's gauges.
    init(
        roles: ProcessRoles,
        worker: WorkerOptions?,
        client: PostgresClient,
        databaseURL: DatabaseURL,
        configuration: FilaConfiguration,
        metrics: PrometheusMetrics = FilaMetrics.make(),
        logger: Logger
    ) throws {
        precondition(!roles.contains(.worker) || worker != nil, "the worker role needs the worker's options")
        let identity = ProcessIdentity(kind: roles.heartbeatKind, version: FilaVersion.current)
        let listenURL = configuration.databaseListenURL ?? databaseURL

        // The sender first: its circuits and rate-limit store show in every heartbeat.
        var sender: SenderAssembly.Assembled?
        if roles.contains(.worker), let worker {
            sender = try SenderAssembly.make(
                name: worker.sender ?? configuration.sender, configuration: configuration, client: client,
                listenURL: listenURL, identity: identity, logger: logger
            )
        }
        // A worker claims nothing while an operator has paused sending (ops.pause_sending).
        let pause = SendingPause()
        let loopSender = sender.map { PausableSender(pause: pause, sender: $0.sender) }
        // Every process delivers the alerts any of them raised (or, with no webhook anywhere,
        // logs them), and says in its heartbeat whether it posts to Slack.
        let delivery = AlertDeliveryService(client: client, notifier: configuration.slackWebhookURL.map { SlackNotifier(url: $0) }, logger: logger)
        let heartbeat = HeartbeatService(
            client: client, identity: identity, stats: ProcessStats(),
            details: { [loopSender] in (loopSender?.healthDetails() ?? [:]).merging(delivery.announcement) { $1 } },
            logger: logger
        )
        // Every process evaluates the rules that must fire when the scheduler is what died;
        // the scheduler also pings the dead man's switch after each healthy round.
        let evaluator = AlertEvaluator(
            client: client,
            rules: [
                SchedulerAlerts.noScheduler(client: client, watcher: identity),
                SchedulerAlerts.lateJobs(client: client),
                CircuitAlerts.openTooLong(client: client),
            ],
            deadman: roles.contains(.scheduler) ? configuration.deadmanURL.map { DeadmanSwitch(url: $0) } : nil,
            logger: logger
        )

        // Every process is visible in worker_heartbeats, the API included (it runs jobs on
        // POST /jobs/NAME). Alert delivery stops after everything that raises alerts.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: client, serviceName: "postgres"),
            .init(service: heartbeat, serviceName: "heartbeat"),
            .init(service: delivery, serviceName: "alerts"),
            .init(service: evaluator, serviceName: "alert-rules"),
        ]
        FilaMetrics.addDatabaseGauges(to: metrics, client: client, logger: logger)
        if let whatsApp = ((sender?.sender as? GuardedSender)?.sender ?? sender?.sender) as? WhatsAppSender {
            // The environment's providers, and every chip the roster knows at the scrape.
            let breakers = whatsApp.routes.map(\.breaker)
            let chips = whatsApp.chips
            metrics.addLive { SendMetrics.circuitSamples(breakers + (chips?.cached?.entries.map(\.route.breaker) ?? [])) }
        }
        let metricsAPI = MetricsAPI(metrics: metrics, client: client, logger: logger)
        if let port = configuration.metricsPort {
            // Up before the roles and down after them, so a draining process can be scraped.
            let server = HTTPServer.makeMetricsApplication(host: configuration.host, port: port, metrics: metricsAPI, logger: logger)
            services.append(.init(service: server, serviceName: "metrics"))
        }
        if roles.contains(.api) {
            let application = HTTPServer.makeApplication(
                configuration: configuration,
                jobs: JobsAssembly.api(client: client, url: databaseURL, identity: identity, configuration: configuration, logger: logger),
                health: HealthAPI(client: client, redisURL: configuration.redisURL, logger: logger),
                metrics: metricsAPI,
                guardrails: GuardrailsAPI(client: client, admin: AdminAuthorization(token: configuration.adminToken), logger: logger),
                enqueue: EnqueueAPI(
                    queue: MessageQueue(client: client),
                    producer: AdminAuthorization(token: configuration.producerToken, role: "producer", variable: "PRODUCER_TOKEN"),
                    logger: logger
                ),
                dashboard: DashboardAPI(
                    client: client, redisURL: configuration.redisURL,
                    access: DashboardAuthorization(adminToken: configuration.adminToken, dashboardToken: configuration.dashboardToken),
                    timeZone: configuration.timeZone, logger: logger
                ),
                logger: logger
            )
            services.append(.init(service: application, serviceName: "http"))
        }
        if roles.contains(.scheduler) {
            let scheduler = JobsAssembly.scheduler(client: client, url: databaseURL, identity: identity, configuration: configuration, logger: logger)
            services.append(.init(service: scheduler, serviceName: "scheduler"))
        }
        if let worker, let sender, let loopSender {
            let wake = WakeSignal()
            let loop = Worker(
                configuration: worker.configuration(drainTimeout: configuration.drainTimeout),
                queue: MessageQueue(client: client),
                sender: loopSender,
                heartbeat: heartbeat,
                wake: wake,
                logger: logger
            )
            // The sender's services (its HTTP client, the circuits' sync) stop after the worker.
            services += sender.services
            services.append(.init(service: QueueListener(url: listenURL, wake: wake, logger: logger), serviceName: "listener"))
            services.append(.init(
                service: SendingPauseWatcher(pause: pause, client: client, listenURL: listenURL, wake: wake, logger: logger),
                serviceName: "sending-pause"
            ))
            services.append(.init(service: loop, serviceName: "worker"))
        }
        self.services = services
    }

    /// A long-running command's whole body: reads the configuration, builds the process for
    /// `roles`, and runs it until SIGTERM or SIGINT, reporting errors as every command does.
    static func run(_ roles: ProcessRoles, global: GlobalOptions, worker: WorkerOptions? = nil) async throws {
        try await reportingErrors {
            let context = try CommandContext(options: global)
            let (databaseURL, client) = try context.makeClient()
            // Once per process, before anything makes a metric handle.
            let metrics = FilaMetrics.make()
            MetricsSystem.bootstrap(metrics.factory)
            let assembly = try ProcessAssembly(
                roles: roles, worker: worker, client: client, databaseURL: databaseURL,
                configuration: context.configuration, metrics: metrics, logger: context.logger
            )
            try await FilaServices.run(assembly.services, configuration: context.configuration, logger: context.logger)
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

    /// Runs `body`, a one-shot command's work, while `heartbeat` beats beside it; then
    /// shuts the heartbeat down gracefully, so its last row says `stopped` whether `body`
    /// returned or threw. The caller beats once first if the row must exist before `body`
    /// starts.
    static func whileBeating<Value>(
        _ heartbeat: HeartbeatService,
        logger: Logger,
        _ body: () async throws -> Value
    ) async throws -> Value {
        let group = ServiceGroup(configuration: .init(services: [.init(service: heartbeat, serviceName: "heartbeat")], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let result: Result<Value, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            // Remembered by the group even if it has not started yet.
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return try result.get()
        }
    }
}
