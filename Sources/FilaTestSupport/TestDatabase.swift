#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Database
import Logging
import PostgresNIO

/// Fresh databases for tests on the server named by `FILA_TEST_DATABASE_URL` (`ops/test`
/// starts one and sets it).
///
/// Every test gets a database of its own, created from a migrated template (fast: a file
/// copy), so tests run in parallel and leave nothing behind.
///
/// Most tests take theirs from a trait (`TestDatabaseTrait`):
///
/// ```swift
/// @Test(.migratedDatabase) func aTest() async throws {
///     let client = try TestDatabase.current.client
///     …
/// }
/// ```
///
/// A test that needs a second database, or one on a server of its own, uses the closures:
///
/// ```swift
/// try await TestDatabase.withMigrated { url in
///     try await TestDatabase.withClient(url) { client in … }
/// }
/// ```
public enum TestDatabase {
    public static let logger: Logger = {
        var logger = Logger(label: "fila.test")
        logger.logLevel = ProcessInfo.processInfo.environment["FILA_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }()

    /// The test server's maintenance database URL.
    public static func serverURL() throws -> DatabaseURL {
        guard let text = ProcessInfo.processInfo.environment["FILA_TEST_DATABASE_URL"], !text.isEmpty else {
            throw TestSetupError("FILA_TEST_DATABASE_URL is not set: run the tests with ops/test, which starts a throwaway Postgres")
        }
        return try DatabaseURL(text)
    }

    /// Runs `body` with the URL of a new database holding the whole schema; drops it after.
    public static func withMigrated<Result: Sendable>(_ body: (DatabaseURL) async throws -> Result) async throws -> Result {
        let template = try await templateName.value
        return try await withDatabase(template: template, body)
    }

    /// Runs `body` with the URL of a new, empty database; drops it after.
    public static func withEmpty<Result: Sendable>(_ body: (DatabaseURL) async throws -> Result) async throws -> Result {
        try await withDatabase(template: "template0", body)
    }

    /// Runs `body` with a running connection pool on `url`.
    public static func withClient<Result: Sendable>(
        _ url: DatabaseURL,
        maximumConnections: Int = 8,
        _ body: (PostgresClient) async throws -> Result
    ) async throws -> Result {
        let client = PostgresClient(configuration: url.clientConfiguration(maximumConnections: maximumConnections), backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    private static func withDatabase<Result: Sendable>(template: String, _ body: (DatabaseURL) async throws -> Result) async throws -> Result {
        let server = try serverURL()
        let name = "fila_test_" + randomSuffix()
        try await server.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) TEMPLATE \(template)"), logger: logger)
        }
        do {
            let result = try await body(server.with(database: name))
            try await drop(name, on: server)
            return result
        } catch {
            try? await drop(name, on: server)
            throw error
        }
    }

    private static func drop(_ name: String, on server: DatabaseURL) async throws {
        try await server.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger)
        }
    }

    /// The migrated template for this build's migrations, created once per server and
    /// named after them, so a changed migration gets a template of its own.
    private static let templateName = Task<String, any Error> {
        let server = try serverURL()
        let name = "fila_template_" + fingerprint(of: Migration.bundled)
        let exists = try await server.withConnection(logger: logger) { connection in
            try await connection.query("SELECT count(*) FROM pg_database WHERE datname = \(name)", logger: logger)
                .collect().first?.decode(Int.self) ?? 0
        }
        if exists > 0 { return name }

        // Build under a private name and rename when complete, so a template that exists is
        // always whole, even when two test processes race to create it.
        let building = name + "_" + randomSuffix()
        try await server.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(building) TEMPLATE template0"), logger: logger)
        }
        try await server.with(database: building).withConnection(logger: logger) { connection in
            _ = try await Migrator().migrate(on: connection, logger: logger)
        }
        try await server.withConnection(logger: logger) { connection in
            do {
                try await connection.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(building) RENAME TO \(name)"), logger: logger)
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P04" {
                try await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE \(building)"), logger: logger)
            }
        }
        return name
    }

    static func fingerprint(of migrations: [Migration]) -> String {
        // FNV-1a over every migration's bytes: a name, not a security boundary.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for migration in migrations {
            for byte in Array(migration.identifier.utf8) + Array(migration.sql.utf8) {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
        }
        return String(hash, radix: 16)
    }

    static func randomSuffix() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }
}

/// The test environment is not set up; the message says how to fix it.
public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension DatabaseURL {
    /// This URL as text for a child process's `DATABASE_URL` or for psql, including the
    /// Unix socket folder (`host=`) the test servers listen on and the password, if any.
    public var connectionString: String {
        var text = "postgres://" + Self.encoded(username)
        if let password { text += ":" + Self.encoded(password) }
        text += "@" + (socketDirectory == nil ? (host.contains(":") ? "[\(host)]" : host) : "") + ":\(port)/" + Self.encoded(database)
        var parameters: [String] = []
        if let socketDirectory { parameters.append("host=" + Self.encoded(socketDirectory)) }
        parameters.append("sslmode=" + (socketDirectory == nil ? sslMode.rawValue : "disable"))
        return text + "?" + parameters.joined(separator: "&")
    }

    /// Percent-encodes every byte but unreserved characters and `/`.
    private static func encoded(_ part: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        for byte in part.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"):
                bytes.append(byte)
            default:
                bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
