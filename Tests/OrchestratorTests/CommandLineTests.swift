import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The `fila` binary as users run it: exit statuses, what it prints, signals.
@Suite("fila on the command line", .timeLimit(.minutes(3)))
struct CommandLineTests {
    let logger = TestDatabase.logger

    private func environment(_ url: DatabaseURL) -> [String: String] {
        ["DATABASE_URL": url.connectionString]
    }

    @Test func printsItsVersion() async throws {
        let output = try await FilaProcess.run(["version"])
        #expect(output.status == 0)
        #expect(output.standardOutput == "fila 0.1.0\n")
    }

    @Test(arguments: [
        (["migrate"], ["DATABASE_URL": "mysql://root@db/fila"], "fila: DATABASE_URL has scheme 'mysql'; expected postgres:// or postgresql://"),
        (["serve"], ["DATABASE_URL": "postgres://db/fila"], "fila: DATABASE_URL has no user name (postgres://USER@host/database)"),
        (["migrate", "--database-url", "postgres://u@h/db?sslmode=never"], [:], "fila: --database-url has sslmode 'never'; expected one of disable, prefer, require, verify-ca, verify-full"),
        (["migrate"], [:], "fila: DATABASE_URL is not set (export DATABASE_URL=postgres://user:password@host:5432/database or pass --database-url)"),
        (["serve"], ["DATABASE_URL": "postgres://u@h/db", "PORT": "http"], "fila: PORT is 'http'; expected a port number 1-65535 (0: any free port)"),
        (["worker"], ["DATABASE_URL": "postgres://u@h/db", "METRICS_PORT": "99999"], "fila: METRICS_PORT is '99999'; expected a port number 1-65535 (0: any free port)"),
        // A connect timeout the driver would overflow (it counts nanoseconds in an Int64).
        (["migrate"], ["DATABASE_URL": "postgres://u@h/d?connect_timeout=10000000000"], "fila: DATABASE_URL has connect_timeout '10000000000'; expected 1-3600 seconds"),
        (["migrate"], ["DATABASE_URL": "postgres://u@h/d", "DATABASE_LISTEN_URL": "postgres://u@h/d?connect_timeout=9999999999"], "fila: DATABASE_LISTEN_URL has connect_timeout '9999999999'; expected 1-3600 seconds"),
        (["job", "list", "--database-url", "postgres://u@h/d?connect_timeout=86400"], [:], "fila: --database-url has connect_timeout '86400'; expected 1-3600 seconds"),
    ] as [([String], [String: String], String)])
    func aBadConfigurationIsOneLineAndExit78(arguments: [String], environment: [String: String], line: String) async throws {
        let output = try await FilaProcess.run(arguments, environment: environment)
        #expect(output.status == 78)
        #expect(output.errorLines == [line])
        #expect(output.standardOutput.isEmpty)
    }

    @Test func anUnreachableDatabaseIsOneLineAndExit69() async throws {
        let output = try await FilaProcess.run(["migrate"], environment: ["DATABASE_URL": "postgres://fila:pw@127.0.0.1:1/fila?sslmode=disable"])
        #expect(output.status == 69)
        #expect(output.errorLines.count == 1)
        #expect(output.standardError.hasPrefix("fila: cannot connect to postgres://fila:***@127.0.0.1:1/fila"))
        #expect(!output.standardError.contains(":pw@"))
    }

    /// `DATABASE_URL` through a transaction pooler (PgBouncer-like: each transaction on a
    /// server connection of its own, those kept open): `fila migrate` leaves no lock on any
    /// of them, so the next deploy's `fila migrate` does not wait for one.
    @Test(.emptyDatabase, .timeLimit(.minutes(3))) func migrateThroughATransactionPoolerLeavesNothingToWaitFor() async throws {
        let url = try TestDatabase.current.url
        try await TransactionPooler.with(upstream: url) { pooler throws in
            let first = try await FilaProcess.run(["migrate"], environment: environment(pooler.url))
            #expect(first.status == 0, "\(first.standardError)")
            let locks = try await url.withConnection(logger: logger) { connection in
                try await connection.query(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    logger: logger
                ).collect().first!.decode(Int.self)
            }
            try #require(locks == 0, "fila migrate left an advisory lock on one of the pooler's server connections")
            let next = try await FilaProcess.run(["migrate"], environment: environment(pooler.url))
            #expect(next.status == 0, "\(next.standardError)")
            #expect(next.standardOutput == "database is up to date: 0 migrations applied now, \(Migration.bundled.count) already applied\n")
        }
    }

    /// The words of each line of a table printed by `fila migrate --status`.
    private func columns(_ table: String) -> [[Substring]] {
        table.split(separator: "\n").map { $0.split(separator: " ") }
    }

    @Test(.emptyDatabase) func migrateThenStatus() async throws {
        let url = try TestDatabase.current.url
        let before = try await FilaProcess.run(["migrate", "--status"], environment: environment(url))
        #expect(before.status == 0)
        #expect(columns(before.standardOutput).first == ["MIGRATION", "STATE", "APPLIED", "AT"])
        #expect(columns(before.standardOutput).dropFirst().first == ["0001_initial", "pending", "-"])
        #expect(before.standardOutput.hasSuffix("\(Migration.bundled.count) pending\n"))

        let migrate = try await FilaProcess.run(["migrate"], environment: environment(url))
        #expect(migrate.status == 0, "\(migrate.standardError)")
        #expect(migrate.standardOutput.contains("applied 0001_initial ("))
        #expect(migrate.standardOutput.hasSuffix("database is up to date: \(Migration.bundled.count) migration\(Migration.bundled.count == 1 ? "" : "s") applied now, 0 already applied\n"))

        let again = try await FilaProcess.run(["migrate"], environment: environment(url))
        #expect(again.status == 0)
        #expect(again.standardOutput == "database is up to date: 0 migrations applied now, \(Migration.bundled.count) already applied\n")

        let after = try await FilaProcess.run(["migrate", "--status"], environment: environment(url))
        #expect(after.status == 0)
        let rows = columns(after.standardOutput).dropFirst().prefix(Migration.bundled.count)
        #expect(rows.map { $0.prefix(2) } == Migration.bundled.map { [$0.identifier[...], "applied"] })
        #expect(after.standardOutput.hasSuffix("up to date\n"))
    }

    @Test(.migratedDatabase) func aChangedMigrationIsRefusedWithExit65() async throws {
        let url = try TestDatabase.current.url
        try await url.withConnection(logger: logger) { connection in
            try await connection.query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", logger: logger)
        }
        let migrate = try await FilaProcess.run(["migrate"], environment: environment(url))
        #expect(migrate.status == 65)
        #expect(migrate.errorLines.count == 1)
        #expect(migrate.standardError.hasPrefix("fila: migration 0001_initial was changed after it was applied"))

        let status = try await FilaProcess.run(["migrate", "--status"], environment: environment(url))
        #expect(status.status == 65)
        #expect(columns(status.standardOutput).dropFirst().first?.prefix(4) == ["0001_initial", "CHANGED", "since", "applied"])
    }

    /// Two `fila migrate` processes start while the lock is held: both wait, both exit 0,
    /// and every migration is recorded once.
    @Test(.emptyDatabase) func twoMigrateProcessesAtOnce() async throws {
        let url = try TestDatabase.current.url
        let key = Migrator.advisoryLockKey
        try await url.withConnection(logger: logger) { holder in
            try await holder.query("SELECT pg_advisory_lock(\(key))", logger: logger)
            let first = try FilaProcess.start(["migrate"], environment: environment(url))
            let second = try FilaProcess.start(["migrate"], environment: environment(url))
            var waiting = 0
            for _ in 0..<300 where waiting < 2 {
                waiting = try await holder.query(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    logger: logger
                ).collect().first!.decode(Int.self)
                if waiting < 2 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(waiting == 2)
            try await holder.query("SELECT pg_advisory_unlock(\(key))", logger: logger)

            let outputs = [await first.waitForExit(), await second.waitForExit()]
            #expect(outputs.map(\.status) == [0, 0], "\(outputs.map(\.standardError))")
            #expect(outputs.allSatisfy { $0.standardOutput.hasPrefix("waited for another migration run to finish\n") })
            #expect(outputs.filter { $0.standardOutput.contains("applied 0001_initial") }.count == 1)

            let recorded = try await holder.query("SELECT count(*), count(DISTINCT version) FROM schema_migrations", logger: logger)
                .collect().first!.decode((Int, Int).self)
            #expect(recorded.0 == Migration.bundled.count)
            #expect(recorded.1 == Migration.bundled.count)
        }
    }

    /// `fila serve` answers /health, logs JSON lines, and exits 0 on SIGTERM.
    @Test(.migratedDatabase) func serveAnswersHealthAndStopsOnSIGTERM() async throws {
        let url = try TestDatabase.current.url
        var environment = environment(url)
        environment["HOST"] = "127.0.0.1"
        environment["PORT"] = "0"
        environment["LOG_FORMAT"] = "json"
        let serve = try FilaProcess.start(["serve"], environment: environment)

        let port = try await serve.listeningPort()

        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/health"), timeout: .seconds(5))
        #expect(response.status == .ok)
        let body = try await response.body.collect(upTo: 4096)
        #expect(String(buffer: body).contains(#""status":"pass""#))

        // The API process is in worker_heartbeats like every other; stopped after SIGTERM.
        // Its first beat may land just after the listener is up: look for up to 10 s.
        var running: [(String, String)] = []
        for _ in 0..<200 where running.isEmpty {
            running = try await url.withConnection(logger: logger) { connection in
                try await connection.query("SELECT kind, status FROM worker_heartbeats", logger: logger).collect().map { try $0.decode((String, String).self) }
            }
            if running.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(running.map { [$0.0, $0.1] } == [["api", "running"]])

        serve.signal(SIGTERM)
        let output = await serve.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
        let stopped = try await url.withConnection(logger: logger) { connection in
            try await connection.query("SELECT status FROM worker_heartbeats", logger: logger).collect().map { try $0.decode(String.self) }
        }
        #expect(stopped == ["stopped"])
        for line in output.errorLines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["level"] != nil && object?["msg"] != nil, "not a JSON log line: \(line)")
        }
    }
}
