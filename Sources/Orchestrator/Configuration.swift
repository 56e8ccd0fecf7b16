#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Observability
import Outbound
import Queue
import Resilience

/// Everything a `fila` process is configured with, validated once at start-up.
///
/// Values come from the environment (`Configuration+Environment.swift`) and then from the
/// command line's global options, which win. Every default is written here.
struct FilaConfiguration: Sendable {
    /// `DATABASE_URL`: the Postgres everything runs on. Required by every command that
    /// touches the database.
    var databaseURL: DatabaseURL?
    /// `DATABASE_LISTEN_URL`: a direct connection for LISTEN when `DATABASE_URL` goes
    /// through a transaction pooler. Defaults to `DATABASE_URL`.
    var databaseListenURL: DatabaseURL?
    /// `REDIS_URL`: optional; used only on the rate-limit path.
    var redisURL: RedisURL?
    /// `HOST`: the HTTP server's bind address.
    var host: String
    /// `PORT`: the HTTP server's port (Railway injects it); 0 picks any free port, which the
    /// "listening on" log line reports.
    var port: Int
    /// `METRICS_PORT`: when set, the process also serves `/metrics` and `/health` on this
    /// port (on `HOST`), so workers and schedulers, which have no API, can be scraped. 0
    /// picks any free port, which the "metrics endpoint listening on" log line reports.
    var metricsPort: Int?
    /// How long an HTTP connection may sit without sending a complete request head (or
    /// between requests) before the server closes it, so slow or silent clients cannot hold
    /// descriptors. A request being answered is never cut: a job may run longer.
    var httpIdleTimeout: Duration
    /// The largest HTTP request body accepted, in bytes; a larger one is answered 413
    /// before any handler runs.
    var httpMaxRequestBodyBytes: Int
    /// `ADMIN_TOKEN`: the bearer token the admin endpoints require (16+ characters).
    var adminToken: String?
    /// `PRODUCER_TOKEN`: the bearer token `POST /fila` and `/fila/batch` require (16+
    /// characters); unset, they are off.
    var producerToken: String?
    /// `DASHBOARD_TOKEN`: a read-only token that opens `GET /dashboard` and nothing else
    /// (16+ characters). The admin token opens the dashboard too; with neither, it is off.
    var dashboardToken: String?
    /// `LOG_LEVEL`.
    var logLevel: Logger.Level
    /// `LOG_FORMAT`: `json` for collectors, `text` for terminals.
    var logFormat: LogFormat
    /// `TZ`: the time zone of cron schedules and per-day budgets.
    var timeZone: TimeZone
    /// `SHUTDOWN_TIMEOUT`: seconds a process has to finish in-flight work after SIGTERM
    /// before what is left is cancelled.
    var shutdownTimeout: Duration
    /// `DATABASE_POOL_SIZE`: connections per process.
    var databasePoolSize: Int
    /// `FILA_SENDER`: where workers send messages; never chosen silently.
    var sender: String?
    /// `FILA_SANDBOX_DELAY_MS`, `FILA_SANDBOX_FAILURE_RATE`, `FILA_SANDBOX_RECORD`: the
    /// sandbox sender's knobs.
    var sandbox: SandboxSender.Configuration
    /// `EVOLUTION_URL`, `EVOLUTION_API_KEY`, `EVOLUTION_INSTANCE`: the Evolution API
    /// gateway, the `whatsapp` sender's first provider. All three or none.
    var evolution: EvolutionProvider.Configuration?
    /// `ZAPI_INSTANCE_ID`, `ZAPI_TOKEN`, `ZAPI_CLIENT_TOKEN` (and `ZAPI_URL`, default
    /// https://api.z-api.io): Z-API, the fallback provider. All three or none.
    var zapi: ZAPIProvider.Configuration?
    /// `FILA_PROVIDER_TIMEOUT_MS`: how long one provider call may take. Evolution's
    /// `delay` blocks its answer, so keep this above the typing delays you use.
    var providerTimeout: Duration
    /// `FILA_CIRCUIT_FAILURES`, `FILA_CIRCUIT_RESET_SECONDS`, `FILA_CIRCUIT_RESET_MAX_SECONDS`,
    /// `FILA_CIRCUIT_PROBES`: the providers' breakers (5 failures; 60 s doubling to 600 s; 1 probe).
    /// `FILA_CIRCUIT_FAILURE_RATE` (with `FILA_CIRCUIT_RATE_WINDOW_SECONDS`, default 60, and
    /// `FILA_CIRCUIT_RATE_MIN_CALLS`, default 20) adds a second rule: open when that share
    /// of the calls in the window failed.
    var circuitPolicy: CircuitBreakerPolicy
    /// `FILA_RATE_LIMIT`: `on` (default) or `off`; the budgets themselves are in app_settings.
    var rateLimitEnabled: Bool
    /// `FILA_REDIS_TIMEOUT_MS`: how long a Redis rate-limit check may take before the
    /// check falls back to Postgres.
    var redisTimeout: Duration
    /// `SLACK_WEBHOOK_URL`: the Slack incoming webhook alerts are posted to. Unset, alerts are
    /// still recorded in `alert_events` and logged. A secret: it prints as its host only.
    var slackWebhookURL: SecretURL?
    /// `FILA_DEADMAN_URL`: a dead man's switch (healthchecks.io, Cronitor…) the scheduler GETs
    /// after each healthy alert evaluation, so an outside service alerts when the whole
    /// deployment is gone. A secret too.
    var deadmanURL: SecretURL?

    /// How long a worker lets in-flight sends run after SIGTERM: three quarters of the
    /// shutdown timeout, leaving the rest for writing outcomes.
    var drainTimeout: Duration { shutdownTimeout * 3 / 4 }

    init(
        databaseURL: DatabaseURL? = nil,
        databaseListenURL: DatabaseURL? = nil,
        redisURL: RedisURL? = nil,
        host: String = "0.0.0.0",
        port: Int = 8080,
        metricsPort: Int? = nil,
        httpIdleTimeout: Duration = .seconds(30),
        httpMaxRequestBodyBytes: Int = 1 << 20,
        adminToken: String? = nil,
        producerToken: String? = nil,
        dashboardToken: String? = nil,
        logLevel: Logger.Level = .info,
        logFormat: LogFormat = .text,
        timeZone: TimeZone = TimeZone(identifier: "America/Sao_Paulo")!,
        shutdownTimeout: Duration = .seconds(30),
        databasePoolSize: Int = 10,
        sender: String? = nil,
        sandbox: SandboxSender.Configuration = .init(),
        evolution: EvolutionProvider.Configuration? = nil,
        zapi: ZAPIProvider.Configuration? = nil,
        providerTimeout: Duration = .seconds(30),
        circuitPolicy: CircuitBreakerPolicy = .init(),
        rateLimitEnabled: Bool = true,
        redisTimeout: Duration = .milliseconds(50),
        slackWebhookURL: SecretURL? = nil,
        deadmanURL: SecretURL? = nil
    ) {
        self.databaseURL = databaseURL
        self.databaseListenURL = databaseListenURL
        self.redisURL = redisURL
        self.host = host
        self.port = port
        self.metricsPort = metricsPort
        self.httpIdleTimeout = httpIdleTimeout
        self.httpMaxRequestBodyBytes = httpMaxRequestBodyBytes
        self.adminToken = adminToken
        self.producerToken = producerToken
        self.dashboardToken = dashboardToken
        self.logLevel = logLevel
        self.logFormat = logFormat
        self.timeZone = timeZone
        self.shutdownTimeout = shutdownTimeout
        self.databasePoolSize = databasePoolSize
        self.sender = sender
        self.sandbox = sandbox
        self.evolution = evolution
        self.zapi = zapi
        self.providerTimeout = providerTimeout
        self.circuitPolicy = circuitPolicy
        self.rateLimitEnabled = rateLimitEnabled
        self.redisTimeout = redisTimeout
        self.slackWebhookURL = slackWebhookURL
        self.deadmanURL = deadmanURL
    }

    /// The database URL, or the error that names the missing variable.
    func requireDatabaseURL() throws(ConfigurationError) -> DatabaseURL {
        guard let databaseURL else {
            throw ConfigurationError(
                variable: "DATABASE_URL",
                reason: "is not set (export DATABASE_URL=postgres://user:password@host:5432/database or pass --database-url)"
            )
        }
        return databaseURL
    }
}

/// A configuration value that cannot be used; `description` is the one line a user sees,
/// naming the variable and never echoing a secret.
struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    let variable: String
    let reason: String

    var description: String { "\(variable) \(reason)" }
}
