#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import NIOSSL
import PostgresNIO

/// Where and how to reach Postgres, parsed from a libpq-style URL:
/// `postgres://user:password@host:5432/database?sslmode=prefer`.
///
/// Supported query parameters: `sslmode` (disable, prefer, require, verify-ca,
/// verify-full; default prefer), `sslrootcert` (a PEM file), `host` (a Unix socket
/// directory, as libpq takes it), `application_name` and `connect_timeout` (seconds,
/// 1-3600).
/// Anything else is refused rather than silently ignored.
///
/// `description` never shows the password.
public struct DatabaseURL: Sendable, Hashable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    /// A Unix socket directory; when set, `host` is ignored.
    public var socketDirectory: String?
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?
    public var applicationName: String
    public var connectTimeoutSeconds: Int

    /// The `connect_timeout` values accepted, in seconds.
    public static let connectTimeoutRange = 1...3600

    public init(_ text: String) throws(DatabaseURLError) {
        guard !text.isEmpty else { throw DatabaseURLError("is empty") }
        guard text.first?.isWhitespace == false, text.last?.isWhitespace == false else {
            throw DatabaseURLError("has leading or trailing spaces")
        }
        guard let components = URLComponents(string: text), let scheme = components.scheme else {
            throw DatabaseURLError("is not a URL (expected postgres://user:password@host:port/database)")
        }
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw DatabaseURLError("has scheme '\(scheme)'; expected postgres:// or postgresql://")
        }
        var socketDirectory: String?
        var sslMode = SSLMode.prefer
        var sslRootCertificate: String?
        var applicationName = "fila"
        var connectTimeout = 10
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    let allowed = SSLMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw DatabaseURLError("has sslmode '\(value)'; expected one of \(allowed)")
                }
                sslMode = mode
            case "sslrootcert":
                sslRootCertificate = value
            case "host":
                guard value.hasPrefix("/") else { throw DatabaseURLError("has a host parameter that is not an absolute socket directory") }
                socketDirectory = value
            case "application_name":
                applicationName = value
            case "connect_timeout":
                // Bounded: the driver counts it in nanoseconds in an Int64, which a value of
                // about 300 years overflows.
                guard let seconds = Int(value), Self.connectTimeoutRange.contains(seconds) else {
                    throw DatabaseURLError(
                        "has connect_timeout '\(String(value.prefix(40)))'; expected \(Self.connectTimeoutRange.lowerBound)-\(Self.connectTimeoutRange.upperBound) seconds"
                    )
                }
                connectTimeout = seconds
            default:
                throw DatabaseURLError("has unsupported parameter '\(item.name)'")
            }
        }
        let host = components.host ?? ""
        guard !host.isEmpty || socketDirectory != nil else { throw DatabaseURLError("has no host") }
        if let port = components.port, !(1...65535).contains(port) {
            throw DatabaseURLError("has port \(port), outside 1-65535")
        }
        guard let username = components.user, !username.isEmpty else {
            throw DatabaseURLError("has no user name (postgres://USER@host/database)")
        }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard !path.contains("/") else { throw DatabaseURLError("has a path that is not a single database name") }

        self.host = host
        self.port = components.port ?? 5432
        self.socketDirectory = socketDirectory
        self.username = username
        self.password = components.password
        self.database = path.isEmpty ? username : path
        self.sslMode = sslMode
        self.sslRootCertificate = sslRootCertificate
        self.applicationName = applicationName
        self.connectTimeoutSeconds = connectTimeout
    }

    /// The same server and credentials, another database (tests, `CREATE DATABASE`).
    public func with(database: String) -> DatabaseURL {
        var copy = self
        copy.database = database
        return copy
    }

    /// The URL with the password replaced by `***`: safe for logs and error messages.
    public var description: String {
        var text = "postgres://\(username)"
        if password != nil { text += ":***" }
        text += "@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
        var parameters: [String] = []
        if let socketDirectory { parameters.append("host=\(socketDirectory)") }
        if sslMode != .prefer { parameters.append("sslmode=\(sslMode.rawValue)") }
        return parameters.isEmpty ? text : text + "?" + parameters.joined(separator: "&")
    }

    /// `connectTimeoutSeconds` within `connectTimeoutRange` (the property can be set
    /// directly), so the driver's nanosecond count cannot overflow.
    private var connectTimeout: Duration {
        .seconds(min(max(connectTimeoutSeconds, Self.connectTimeoutRange.lowerBound), Self.connectTimeoutRange.upperBound))
    }

    private var socketPath: String? {
        socketDirectory.map { "\($0)/.s.PGSQL.\(port)" }
    }

    private func tlsConfiguration() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .disable, .prefer, .require:
            // libpq semantics: encryption without certificate checks unless verify-* is asked for.
            tls.certificateVerification = .none
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
        case .verifyFull:
            tls.certificateVerification = .fullVerification
        }
        if let sslRootCertificate {
            tls.trustRoots = .file(sslRootCertificate)
        }
        return tls
    }

    /// Settings for a pooled `PostgresClient`.
    public func clientConfiguration(maximumConnections: Int = 20) -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketPath {
            configuration = .init(unixSocketPath: socketPath, username: username, password: password, database: database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(tlsConfiguration())
            case .require, .verifyCA, .verifyFull: tls = .require(tlsConfiguration())
            }
            configuration = .init(host: host, port: port, username: username, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = connectTimeout
        configuration.options.maximumConnections = maximumConnections
        configuration.options.additionalStartupParameters = [("application_name", applicationName)]
        return configuration
    }

    /// Settings for one dedicated `PostgresConnection` (migrations, LISTEN).
    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if let socketPath {
            configuration = .init(unixSocketPath: socketPath, username: username, password: password, database: database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: tlsConfiguration()))
            case .require, .verifyCA, .verifyFull: tls = .require(try NIOSSLContext(configuration: tlsConfiguration()))
            }
            configuration = .init(host: host, port: port, username: username, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = TimeAmount(connectTimeout)
        configuration.options.additionalStartupParameters = [("application_name", applicationName)]
        return configuration
    }

    /// Opens one dedicated connection, runs `body`, and closes it, also when `body` throws.
    /// Fails at once with the server's reason when Postgres is unreachable or refuses us.
    @discardableResult
    public func withConnection<Result: Sendable>(
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: try connectionConfiguration(),
                id: Int.random(in: 1...Int.max),
                logger: logger
            )
        } catch {
            throw DatabaseError(unreachableAt: self, error: error)
        }
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// Why a database URL was refused; the message completes "DATABASE_URL …".
public struct DatabaseURLError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

extension DatabaseError {
    init(unreachableAt url: DatabaseURL, error: any Error) {
        if let psql = error as? PSQLError, let message = psql.serverInfo?[.message] {
            self.init(.unreachable, "cannot connect to \(url): \(message)", sqlState: psql.serverInfo?[.sqlState], underlying: error)
        } else if let psql = error as? PSQLError, let underlying = psql.underlying {
            self.init(.unreachable, "cannot connect to \(url): \(underlying)", underlying: error)
        } else {
            self.init(.unreachable, "cannot connect to \(url): \(error)", underlying: error)
        }
    }
}
