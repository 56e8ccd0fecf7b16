import Database
import Foundation
import Logging
import Observability
import Resilience
import Testing

@testable import Orchestrator

@Suite("Configuration is read from the environment once and validated")
struct ConfigurationTests {
    @Test func defaultsWhenNothingIsSet() throws {
        let configuration = try FilaConfiguration(environment: [:])
        #expect(configuration.databaseURL == nil)
        #expect(configuration.port == 8080)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.logLevel == .info)
        #expect(configuration.logFormat == .text)
        #expect(configuration.timeZone.identifier == "America/Sao_Paulo")
        #expect(configuration.shutdownTimeout == .seconds(30))
        #expect(throws: ConfigurationError.self) { try configuration.requireDatabaseURL() }
    }

    @Test func readsEveryVariable() throws {
        let configuration = try FilaConfiguration(environment: [
            "DATABASE_URL": "postgres://fila:pw@db:5432/fila",
            "DATABASE_LISTEN_URL": "postgres://fila:pw@db-direct:5432/fila",
            "REDIS_URL": "redis://:secret@cache:6380/2",
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "METRICS_PORT": "9100",
            "ADMIN_TOKEN": "0123456789abcdef",
            "PRODUCER_TOKEN": "fedcba9876543210",
            "DASHBOARD_TOKEN": "dashboard-0123456789",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
            "TZ": ":America/Manaus",
            "SHUTDOWN_TIMEOUT": "5",
            "DATABASE_POOL_SIZE": "4",
        ])
        #expect(configuration.databaseURL?.host == "db")
        #expect(configuration.databaseListenURL?.host == "db-direct")
        #expect(configuration.redisURL == (try RedisURL("redis://:secret@cache:6380/2")))
        #expect(configuration.redisURL?.database == 2)
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 9000)
        #expect(configuration.metricsPort == 9100)
        #expect(configuration.adminToken == "0123456789abcdef")
        #expect(configuration.producerToken == "fedcba9876543210")
        #expect(configuration.dashboardToken == "dashboard-0123456789")
        #expect(configuration.logLevel == .debug)
        #expect(configuration.logFormat == .json)
        #expect(configuration.timeZone.identifier == "America/Manaus")
        #expect(configuration.shutdownTimeout == .seconds(5))
        #expect(configuration.databasePoolSize == 4)
    }

    @Test func theSlackWebhookIsReadAndPrintsWithoutItsSecretPath() throws {
        #expect(try FilaConfiguration(environment: [:]).slackWebhookURL == nil)
        let configuration = try FilaConfiguration(environment: ["SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/hunter2secret"])
        let url = try #require(configuration.slackWebhookURL)
        #expect("\(url)" == "https://hooks.slack.com/…")
        #expect(!String(reflecting: configuration).contains("hunter2secret"))
    }

    @Test func emptyVariablesCountAsUnset() throws {
        let configuration = try FilaConfiguration(environment: ["DATABASE_URL": "", "PORT": ""])
        #expect(configuration.databaseURL == nil)
        #expect(configuration.port == 8080)
    }

    @Test(arguments: [
        ("DATABASE_URL", "http://example.com", "DATABASE_URL has scheme 'http'"),
        ("DATABASE_LISTEN_URL", "postgres://db/fila", "DATABASE_LISTEN_URL has no user name"),
        ("REDIS_URL", "memcached://x", "REDIS_URL has scheme 'memcached'"),
        ("REDIS_URL", "rediss://cache:6380", "REDIS_URL asks for TLS (rediss://), which is not supported"),
        ("EVOLUTION_URL", "evolution:8080", "EVOLUTION_URL is not an http:// or https:// URL"),
        ("ZAPI_URL", "ftp://z-api", "ZAPI_URL is not an http:// or https:// URL"),
        ("FILA_CIRCUIT_FAILURES", "0", "FILA_CIRCUIT_FAILURES is '0'"),
        ("FILA_RATE_LIMIT", "maybe", "FILA_RATE_LIMIT is 'maybe'"),
        ("FILA_CIRCUIT_FAILURE_RATE", "1.5", "FILA_CIRCUIT_FAILURE_RATE is '1.5'"),
        ("FILA_REDIS_TIMEOUT_MS", "fast", "FILA_REDIS_TIMEOUT_MS is 'fast'"),
        ("PORT", "80a", "PORT is '80a'"),
        ("PORT", "70000", "PORT is '70000'"),
        ("METRICS_PORT", "metrics", "METRICS_PORT is 'metrics'"),
        ("METRICS_PORT", "-1", "METRICS_PORT is '-1'"),
        ("ADMIN_TOKEN", "short", "ADMIN_TOKEN is too short"),
        ("PRODUCER_TOKEN", "short", "PRODUCER_TOKEN is too short"),
        ("DASHBOARD_TOKEN", "short", "DASHBOARD_TOKEN is too short"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL is 'loud'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT is 'xml'"),
        ("TZ", "Mars/Olympus", "TZ is 'Mars/Olympus'"),
        ("SHUTDOWN_TIMEOUT", "0", "SHUTDOWN_TIMEOUT is '0'"),
        ("DATABASE_POOL_SIZE", "many", "DATABASE_POOL_SIZE is 'many'"),
    ])
    func namesTheVariableAtFault(variable: String, value: String, message: String) {
        #expect {
            try FilaConfiguration(environment: [variable: value])
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            return error.variable == variable && error.description.hasPrefix(message)
        }
    }

    @Test func neverEchoesASecret() {
        for (variable, value) in [
            ("DATABASE_URL", "postgres://fila:hunter2secret@db/fila?sslmode=maybe"),
            ("REDIS_URL", "redis://:hunter2secret@/0"),
            ("ADMIN_TOKEN", "hunter2secret"),
            ("PRODUCER_TOKEN", "hunter2secret"),
            ("DASHBOARD_TOKEN", "hunter2secret"),
            ("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/hunter2secret"),
        ] {
            do {
                _ = try FilaConfiguration(environment: [variable: value])
                Issue.record("\(variable) accepted")
            } catch {
                #expect(!error.description.contains("hunter2secret"), "\(variable): \(error)")
            }
        }
    }

    @Test func providersAndBreakers() throws {
        let configuration = try FilaConfiguration(environment: [
            "EVOLUTION_URL": "http://evolution:8080", "EVOLUTION_API_KEY": "key", "EVOLUTION_INSTANCE": "chip-1",
            "ZAPI_INSTANCE_ID": "inst", "ZAPI_TOKEN": "tok", "ZAPI_CLIENT_TOKEN": "client",
            "FILA_PROVIDER_TIMEOUT_MS": "5000", "FILA_CIRCUIT_FAILURES": "3", "FILA_CIRCUIT_RESET_SECONDS": "30",
            "FILA_CIRCUIT_RESET_MAX_SECONDS": "10", "FILA_RATE_LIMIT": "off", "FILA_REDIS_TIMEOUT_MS": "20",
            "FILA_CIRCUIT_FAILURE_RATE": "0.5", "FILA_CIRCUIT_RATE_MIN_CALLS": "10",
        ])
        #expect(configuration.circuitPolicy.failureRate == .init(threshold: 0.5, window: .seconds(60), minimumCalls: 10))
        #expect(configuration.evolution?.instance == "chip-1")
        #expect(configuration.evolution?.timeout == .seconds(5))
        #expect(configuration.zapi?.baseURL == "https://api.z-api.io")
        #expect(configuration.circuitPolicy.consecutiveFailures == 3)
        #expect(configuration.circuitPolicy.initialResetWait == .seconds(30))
        // A maximum below the first wait is raised to it.
        #expect(configuration.circuitPolicy.maximumResetWait == .seconds(30))
        #expect(!configuration.rateLimitEnabled)
        #expect(configuration.redisTimeout == .milliseconds(20))

        // A provider half configured names what is missing.
        #expect(throws: ConfigurationError(variable: "EVOLUTION_API_KEY", reason: "is not set; Evolution needs EVOLUTION_URL, EVOLUTION_API_KEY and EVOLUTION_INSTANCE")) {
            try FilaConfiguration(environment: ["EVOLUTION_URL": "http://evolution:8080", "EVOLUTION_INSTANCE": "chip-1"])
        }
        #expect(throws: ConfigurationError(variable: "ZAPI_INSTANCE_ID", reason: "is not set; Z-API needs ZAPI_INSTANCE_ID, ZAPI_TOKEN and ZAPI_CLIENT_TOKEN")) {
            try FilaConfiguration(environment: ["ZAPI_TOKEN": "abc"])
        }

        let defaults = try FilaConfiguration(environment: [:])
        #expect(defaults.evolution == nil && defaults.zapi == nil && defaults.rateLimitEnabled)
        #expect(defaults.circuitPolicy == CircuitBreakerPolicy())
    }

    @Test func commandLineOptionsOverrideTheEnvironment() throws {
        var configuration = try FilaConfiguration(environment: ["DATABASE_URL": "postgres://a@env-host/fila", "LOG_LEVEL": "info"])
        let options = try GlobalOptions.parse(["--database-url", "postgres://a@cli-host/fila", "--log-level", "trace", "--log-format", "json"])
        try configuration.apply(options)
        #expect(configuration.databaseURL?.host == "cli-host")
        #expect(configuration.logLevel == .trace)
        #expect(configuration.logFormat == .json)

        let bad = try GlobalOptions.parse(["--log-format", "yaml"])
        #expect(throws: ConfigurationError(variable: "--log-format", reason: "is 'yaml'; expected json or text")) {
            try configuration.apply(bad)
        }
    }
}
