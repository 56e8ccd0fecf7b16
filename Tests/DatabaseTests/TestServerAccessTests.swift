import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

/// The Postgres servers of ops/test, ops/dev and the tests' own clusters trust whoever
/// connects; that is only safe when nobody but their owner can connect. They listen on no
/// TCP port, only on a Unix socket in a folder of mode 0700.
@Suite("The throwaway Postgres servers are closed to other local accounts", .timeLimit(.minutes(2)))
struct TestServerAccessTests {
    let logger = TestDatabase.logger

    private func expectPrivate(_ url: DatabaseURL) async throws {
        let directory = try #require(url.socketDirectory, "\(url) is not a Unix socket URL")
        let attributes = try FileManager.default.attributesOfItem(atPath: directory)
        let permissions = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? (attributes[.posixPermissions] as? Int)
        #expect(permissions.map { $0 & 0o777 } == 0o700, "\(directory): \(String(describing: permissions))")
        let settings = try await url.withConnection(logger: logger) { connection in
            try await connection.query(
                """
                SELECT current_setting('listen_addresses'),
                       (SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'local' AND auth_method <> 'reject')
                """,
                logger: logger
            ).collect().first!.decode((String, Int).self)
        }
        #expect(settings.0 == "", "listen_addresses = '\(settings.0)'")
        #expect(settings.1 == 0, "pg_hba.conf lets TCP connections in")
        // What a local account would try: the same server over TCP on the loopback.
        var tcp = url
        tcp.socketDirectory = nil
        tcp.host = "127.0.0.1"
        tcp.sslMode = .disable
        tcp.connectTimeoutSeconds = 2
        await #expect(throws: DatabaseError.self) {
            try await tcp.withConnection(logger: logger) { _ in }
        }
    }

    @Test func theSharedTestServerListensOnlyOnAPrivateSocket() async throws {
        try await expectPrivate(try TestDatabase.serverURL())
    }

    @Test(.timeLimit(.minutes(2))) func aClusterOfATestsOwnListensOnlyOnAPrivateSocket() async throws {
        try await TestCluster.with { cluster in
            try await expectPrivate(cluster.url)
            // Restarted in place, it comes back on the same socket.
            try await cluster.restart()
            try await expectPrivate(cluster.url)
        }
    }

    @Test func theSocketURLWorksForPsqlAndParsesBack() async throws {
        let url = try TestDatabase.serverURL()
        #expect(try DatabaseURL(url.connectionString) == url)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", url.connectionString, "-X", "-A", "-t", "-c", "SELECT 'psql reached ' || current_database()"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.hasPrefix("psql reached \(url.database)"), "\(text)")
    }
}
