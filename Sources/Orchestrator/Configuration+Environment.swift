#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import Observability
import Queue

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
            redisURL = try RedisURL(text)
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
        if let text = value("ADMIN_TOKEN") {
            guard text.count >= 16 else {
                throw ConfigurationError(variable: "ADMIN_TOKEN", reason: "is too short; use at least 16 characters")
            }
            adminToken = text
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
