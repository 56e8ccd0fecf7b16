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

extension FilaConfiguration {
    /// Reads and validates the configuration from environment variables; the one place
    /// the process environment is consulted.
    ///
    /// Empty variables count as unset. The first invalid value throws a
    /// `ConfigurationError` naming it.
    init(environment: [String: String]) throws(ConfigurationError) {
        self.init()
        func value(_ name: String) -> String? {
            guard let value = environment[name], !value.isEmpty else { return nil }
            return value
        }

        if let text = value("DATABASE_URL") {
            databaseURL = try Self.parseDatabaseURL(text, variable: "DATABASE_URL")
        }
        if let text = value("DATABASE_LISTEN_URL") {
            databaseListenURL = try Self.parseDatabaseURL(text, variable: "DATABASE_LISTEN_URL")
        }
        if let text = value("REDIS_URL") {
            do {
                redisURL = try RedisURL(text)
            } catch {
                let reason = error.message.hasPrefix("Redis URL ") ? String(error.message.dropFirst("Redis URL ".count)) : error.message
                throw ConfigurationError(variable: "REDIS_URL", reason: reason)
            }
        }
        if let text = value("HOST") {
            host = text
        }
        if let text = value("PORT") {
            guard let number = Int(text), (0...65535).contains(number) else {
                throw ConfigurationError(variable: "PORT", reason: "is '\(text)'; expected a port number 1-65535 (0: any free port)")
            }
            port = number
        }
        if let text = value("METRICS_PORT") {
            guard let number = Int(text), (0...65535).contains(number) else {
                throw ConfigurationError(variable: "METRICS_PORT", reason: "is '\(text)'; expected a port number 1-65535 (0: any free port)")
            }
            metricsPort = number
        }
        if let text = value("ADMIN_TOKEN") {
            guard text.count >= 16 else {
                throw ConfigurationError(variable: "ADMIN_TOKEN", reason: "is too short; use at least 16 characters")
            }
            adminToken = text
        }
        if let text = value("PRODUCER_TOKEN") {
            guard text.count >= 16 else {
                throw ConfigurationError(variable: "PRODUCER_TOKEN", reason: "is too short; use at least 16 characters")
            }
            producerToken = text
        }
        if let text = value("DASHBOARD_TOKEN") {
            guard text.count >= 16 else {
                throw ConfigurationError(variable: "DASHBOARD_TOKEN", reason: "is too short; use at least 16 characters")
            }
            dashboardToken = text
        }
        if let text = value("LOG_LEVEL") {
            logLevel = try Self.parseLogLevel(text, variable: "LOG_LEVEL")
        }
        if let text = value("LOG_FORMAT") {
            logFormat = try Self.parseLogFormat(text, variable: "LOG_FORMAT")
        }
        if let text = value("TZ") {
            // The C library also reads TZ, which may carry a leading colon (":America/Sao_Paulo").
            let identifier = text.hasPrefix(":") ? String(text.dropFirst()) : text
            guard let zone = TimeZone(identifier: identifier) else {
                throw ConfigurationError(variable: "TZ", reason: "is '\(text)', not a known time zone (e.g. America/Sao_Paulo)")
            }
            timeZone = zone
        }
        if let text = value("SHUTDOWN_TIMEOUT") {
            guard let seconds = Int(text), (1...3600).contains(seconds) else {
                throw ConfigurationError(variable: "SHUTDOWN_TIMEOUT", reason: "is '\(text)'; expected seconds, 1-3600")
            }
            shutdownTimeout = .seconds(seconds)
        }
        if let text = value("DATABASE_POOL_SIZE") {
            guard let size = Int(text), (1...500).contains(size) else {
                throw ConfigurationError(variable: "DATABASE_POOL_SIZE", reason: "is '\(text)'; expected 1-500")
            }
            databasePoolSize = size
        }
        if let text = value("FILA_SENDER") {
            sender = text
        }
        if let text = value("FILA_SANDBOX_DELAY_MS") {
            guard let milliseconds = Int(text), (0...600_000).contains(milliseconds) else {
                throw ConfigurationError(variable: "FILA_SANDBOX_DELAY_MS", reason: "is '\(text)'; expected milliseconds, 0-600000")
            }
            sandbox.delay = .milliseconds(milliseconds)
        }
        if let text = value("FILA_SANDBOX_FAILURE_RATE") {
            guard let rate = Double(text), (0...1).contains(rate) else {
                throw ConfigurationError(variable: "FILA_SANDBOX_FAILURE_RATE", reason: "is '\(text)'; expected a fraction, 0-1")
            }
            sandbox.failureRate = rate
        }
        if let text = value("FILA_SANDBOX_RECORD") {
            sandbox.recordPath = text
        }
        if let text = value("FILA_PROVIDER_TIMEOUT_MS") {
            guard let milliseconds = Int(text), (100...600_000).contains(milliseconds) else {
                throw ConfigurationError(variable: "FILA_PROVIDER_TIMEOUT_MS", reason: "is '\(text)'; expected milliseconds, 100-600000")
            }
            providerTimeout = .milliseconds(milliseconds)
        }
        for variable in ["EVOLUTION_URL", "ZAPI_URL"] {
            if let url = value(variable), !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                throw ConfigurationError(variable: variable, reason: "is not an http:// or https:// URL")
            }
        }
        let evolutionParts = ["EVOLUTION_URL", "EVOLUTION_API_KEY", "EVOLUTION_INSTANCE"].map { ($0, value($0)) }
        if evolutionParts.contains(where: { $0.1 != nil }) {
            if let missing = evolutionParts.first(where: { $0.1 == nil }) {
                throw ConfigurationError(variable: missing.0, reason: "is not set; Evolution needs EVOLUTION_URL, EVOLUTION_API_KEY and EVOLUTION_INSTANCE")
            }
            evolution = EvolutionProvider.Configuration(
                baseURL: evolutionParts[0].1!, apiKey: evolutionParts[1].1!, instance: evolutionParts[2].1!, timeout: providerTimeout
            )
        }
        let zapiParts = ["ZAPI_INSTANCE_ID", "ZAPI_TOKEN", "ZAPI_CLIENT_TOKEN"].map { ($0, value($0)) }
        if zapiParts.contains(where: { $0.1 != nil }) {
            if let missing = zapiParts.first(where: { $0.1 == nil }) {
                throw ConfigurationError(variable: missing.0, reason: "is not set; Z-API needs ZAPI_INSTANCE_ID, ZAPI_TOKEN and ZAPI_CLIENT_TOKEN")
            }
            zapi = ZAPIProvider.Configuration(
                baseURL: value("ZAPI_URL") ?? "https://api.z-api.io", instanceID: zapiParts[0].1!, token: zapiParts[1].1!,
                clientToken: zapiParts[2].1!, timeout: providerTimeout
            )
        }
        func count(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
            guard let text = value(name) else { return nil }
            guard let number = Int(text), range.contains(number) else {
                throw ConfigurationError(variable: name, reason: "is '\(text)'; expected \(range.lowerBound)-\(range.upperBound)")
            }
            return number
        }
        if let failures = try count("FILA_CIRCUIT_FAILURES", 1...1000) { circuitPolicy.consecutiveFailures = failures }
        if let seconds = try count("FILA_CIRCUIT_RESET_SECONDS", 1...86_400) { circuitPolicy.initialResetWait = .seconds(seconds) }
        if let seconds = try count("FILA_CIRCUIT_RESET_MAX_SECONDS", 1...86_400) { circuitPolicy.maximumResetWait = .seconds(seconds) }
        circuitPolicy.maximumResetWait = max(circuitPolicy.maximumResetWait, circuitPolicy.initialResetWait)
        if let probes = try count("FILA_CIRCUIT_PROBES", 1...100) { circuitPolicy.halfOpenProbes = probes }
        if let text = value("FILA_CIRCUIT_FAILURE_RATE") {
            guard let rate = Double(text), rate > 0, rate <= 1 else {
                throw ConfigurationError(variable: "FILA_CIRCUIT_FAILURE_RATE", reason: "is '\(text)'; expected a fraction above 0, at most 1")
            }
            let window = try count("FILA_CIRCUIT_RATE_WINDOW_SECONDS", 1...86_400) ?? 60
            let minimum = try count("FILA_CIRCUIT_RATE_MIN_CALLS", 1...100_000) ?? 20
            circuitPolicy.failureRate = .init(threshold: rate, window: .seconds(window), minimumCalls: minimum)
        }
        if let text = value("FILA_RATE_LIMIT") {
            switch text.lowercased() {
            case "on", "true", "1": rateLimitEnabled = true
            case "off", "false", "0": rateLimitEnabled = false
            default: throw ConfigurationError(variable: "FILA_RATE_LIMIT", reason: "is '\(text)'; expected on or off")
            }
        }
        if let milliseconds = try count("FILA_REDIS_TIMEOUT_MS", 1...10_000) { redisTimeout = .milliseconds(milliseconds) }
        if let text = value("SLACK_WEBHOOK_URL") {
            // The reason never repeats the value: the URL is the credential.
            guard let url = SecretURL(text) else {
                throw ConfigurationError(variable: "SLACK_WEBHOOK_URL", reason: "is not an http:// or https:// URL with a path (https://hooks.slack.com/services/…)")
            }
            slackWebhookURL = url
        }
        if let text = value("FILA_DEADMAN_URL") {
            guard let url = SecretURL(text) else {
                throw ConfigurationError(variable: "FILA_DEADMAN_URL", reason: "is not an http:// or https:// URL with a path (https://hc-ping.com/…)")
            }
            deadmanURL = url
        }
    }

    /// Applies the command line's global options over the environment's values.
    mutating func apply(_ options: GlobalOptions) throws(ConfigurationError) {
        if let text = options.databaseURL {
            databaseURL = try Self.parseDatabaseURL(text, variable: "--database-url")
        }
        if let text = options.logLevel {
            logLevel = try Self.parseLogLevel(text, variable: "--log-level")
        }
        if let text = options.logFormat {
            logFormat = try Self.parseLogFormat(text, variable: "--log-format")
        }
    }

    static func parseDatabaseURL(_ text: String, variable: String) throws(ConfigurationError) -> DatabaseURL {
        do {
            return try DatabaseURL(text)
        } catch {
            throw ConfigurationError(variable: variable, reason: error.reason)
        }
    }

    static func parseLogLevel(_ text: String, variable: String) throws(ConfigurationError) -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(variable: variable, reason: "is '\(text)'; expected one of \(allowed)")
        }
        return level
    }

    static func parseLogFormat(_ text: String, variable: String) throws(ConfigurationError) -> LogFormat {
        guard let format = LogFormat(rawValue: text.lowercased()) else {
            throw ConfigurationError(variable: variable, reason: "is '\(text)'; expected json or text")
        }
        return format
    }
}
