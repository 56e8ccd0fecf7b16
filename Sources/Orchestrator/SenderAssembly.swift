import AsyncHTTPClient
import Database
import Logging
import Outbound
import PostgresNIO
import Queue
import Resilience
import ServiceLifecycle

/// Builds the sender a worker was asked for, with the services it needs; no sender is ever
/// chosen silently.
enum SenderAssembly {
    static let available = ["whatsapp", "sandbox"]

    struct Assembled {
        let sender: any MessageSender
        /// To run before the worker (and stop after it): the providers' HTTP client and the
        /// breakers' sync.
        let services: [ServiceGroupConfiguration.ServiceConfiguration]
    }

    static func make(
        name: String?,
        configuration: FilaConfiguration,
        client: PostgresClient,
        listenURL: DatabaseURL,
        identity: ProcessIdentity,
        logger: Logger
    ) throws -> Assembled {
        guard let name else {
            throw ConfigurationError(
                variable: "FILA_SENDER",
                reason: "is not set: choose where messages go with --sender or FILA_SENDER (available: \(available.joined(separator: ", ")))"
            )
        }
        switch name {
        case "sandbox":
            do {
                return Assembled(sender: try SandboxSender(configuration: configuration.sandbox), services: [])
            } catch {
                throw ConfigurationError(variable: "FILA_SANDBOX_RECORD", reason: "cannot be used: \(error)")
            }
        case "whatsapp":
            return try whatsApp(configuration: configuration, client: client, listenURL: listenURL, identity: identity, logger: logger)
        default:
            throw ConfigurationError(variable: "FILA_SENDER", reason: "is '\(name)'; available: \(available.joined(separator: ", "))")
        }
    }

    /// The guardrails first; then the chips table's chips while it has any (`ChipAssembly`),
    /// else Evolution first, Z-API as the fallback, each behind its breaker; the rate limiter
    /// on Postgres, with Redis first when REDIS_URL is set.
    static func whatsApp(
        configuration: FilaConfiguration,
        client: PostgresClient,
        listenURL: DatabaseURL,
        identity: ProcessIdentity,
        logger: Logger
    ) throws -> Assembled {
        let http = ProviderHTTPClient(connectTimeout: min(.seconds(5), configuration.providerTimeout))
        var providers: [any WhatsAppProvider] = []
        if let evolution = configuration.evolution {
            providers.append(EvolutionProvider(configuration: evolution, httpClient: http.client))
        }
        if let zapi = configuration.zapi {
            providers.append(ZAPIProvider(configuration: zapi, httpClient: http.client))
        }
        if providers.isEmpty {
            logger.notice(
                "no provider in the environment (EVOLUTION_*, ZAPI_*): sending through the chips table only; messages wait FAILED_NO_CHIP while it has none"
            )
        }
        let registry = CircuitBreakerRegistry(defaultPolicy: configuration.circuitPolicy, logger: logger)
        let routes = providers.map { WhatsAppSender.Route(provider: $0, breaker: registry.breaker(named: $0.name)) }
        let chips = ChipAssembly.roster(configuration: configuration, client: client, registry: registry, httpClient: http.client, logger: logger)
        let settings = AppSettings(client: client, logger: logger)
        var rateLimiter: RateLimiter?
        if configuration.rateLimitEnabled {
            rateLimiter = RateLimiter(
                postgres: PostgresRateLimitStore(client: client),
                redis: configuration.redisURL.map { RedisRateLimitStore(url: $0) },
                policy: RateLimitPolicy(timeZone: configuration.timeZone.identifier),
                settings: settings,
                redisTimeout: configuration.redisTimeout,
                logger: logger
            )
        }
        let sync = CircuitBreakerSync(registry: registry, client: client, listenURL: listenURL, processID: identity.id, logger: logger)
        // Guardrails first: a message they refuse spends no rate-limit budget.
        let guardrails = Guardrails(client: client, settings: settings, logger: logger)
        let metrics = SendMetrics()
        return Assembled(
            sender: GuardedSender(
                guardrails: guardrails,
                sender: WhatsAppSender(routes: routes, rateLimiter: rateLimiter, registry: registry, chips: chips, metrics: metrics),
                metrics: metrics
            ),
            services: [
                .init(service: http, serviceName: "provider-http"), .init(service: sync, serviceName: "circuits"),
                .init(service: ChipRosterSync(roster: chips, listenURL: listenURL, logger: logger), serviceName: "chips"),
            ]
        )
    }
}
