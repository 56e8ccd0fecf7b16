import Database
import FilaTestSupport
import Logging
import PostgresNIO
import Testing

@Suite("Migrator applies Migrations/ once, in order, under a lock")
struct MigratorTests {
    let logger = TestDatabase.logger

    private func appliedVersions(_ url: DatabaseURL) async throws -> [Int] {
        try await url.withConnection(logger: logger) { connection in
            var versions: [Int] = []
            for try await version in try await connection.query("SELECT version FROM schema_migrations ORDER BY version", logger: logger).decode(Int32.self) {
                versions.append(Int(version))
            }
            return versions
        }
    }

    private func tableExists(_ name: String, in url: DatabaseURL) async throws -> Bool {
        try await url.withConnection(logger: logger) { connection in
            try await connection.query("SELECT to_regclass(\(name)) IS NOT NULL", logger: logger).collect().first!.decode(Bool.self)
        }
    }

    @Test(.emptyDatabase) func migratesAnEmptyDatabaseThenDoesNothing() async throws {
        let url = try TestDatabase.current.url
        let migrator = try Migrator()
        let first = try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
        #expect(first.applied.map(\.migration.version) == Migration.bundled.map(\.version))
        #expect(first.alreadyApplied == 0)
        for table in ["fila_mensagens", "worker_heartbeats", "job_executions", "app_settings", "schema_migrations"] {
            #expect(try await tableExists(table, in: url), "\(table) missing")
        }

        let second = try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
        #expect(second.applied.isEmpty)
        #expect(second.alreadyApplied == Migration.bundled.count)
        #expect(try await appliedVersions(url) == Migration.bundled.map(\.version))
    }

    @Test(.emptyDatabase) func recordsTheServersSHA256OfEachFile() async throws {
        let url = try TestDatabase.current.url
        let migration = Migration(version: 1, name: "one", sql: "CREATE TABLE one (x int);\n")
        _ = try await url.withConnection(logger: logger) { try await Migrator(migrations: [migration]).migrate(on: $0, logger: logger) }
        let checksum = try await url.withConnection(logger: logger) { connection in
            try await connection.query("SELECT checksum FROM schema_migrations WHERE version = 1", logger: logger).collect().first!.decode(String.self)
        }
        // What `sha256sum` prints for the file, so ops/migrate-with-psql records the same.
        #expect(checksum == "5509e238696e4303d02387f86e81b845cd33e8feaaf079c56e608aef95546667")
    }

    @Test(.emptyDatabase) func refusesAnAppliedMigrationThatChanged() async throws {
        let url = try TestDatabase.current.url
        let original = Migration(version: 1, name: "one", sql: "CREATE TABLE one (x int);")
        _ = try await url.withConnection(logger: logger) { try await Migrator(migrations: [original]).migrate(on: $0, logger: logger) }

        let edited = Migration(version: 1, name: "one", sql: "CREATE TABLE one (x bigint);")
        let next = Migration(version: 2, name: "two", sql: "CREATE TABLE two (y int);")
        let migrator = try Migrator(migrations: [edited, next])
        await #expect {
            try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
        } throws: { error in
            let error = error as? DatabaseError
            return error?.code == .migrationChanged && error?.message.contains("0001_one was changed") == true
        }
        // Nothing after the changed migration was applied.
        #expect(try await appliedVersions(url) == [1])
        #expect(try await !tableExists("two", in: url))

        let statuses = try await url.withConnection(logger: logger) { try await migrator.status(on: $0, logger: logger) }
        #expect(statuses.map(\.identifier) == ["0001_one", "0002_two"])
        if case .changed = statuses[0].state {} else { Issue.record("expected changed, got \(statuses[0].state)") }
        #expect(statuses[1].state == .pending)
    }

    @Test(.emptyDatabase) func rollsBackAFailedMigrationWhole() async throws {
        let url = try TestDatabase.current.url
        let good = Migration(version: 1, name: "good", sql: "CREATE TABLE good (x int);")
        let bad = Migration(version: 2, name: "bad", sql: "CREATE TABLE half (x int);\n\nINSERT INTO missing VALUES (1);\n")
        let migrator = try Migrator(migrations: [good, bad])
        await #expect {
            try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
        } throws: { error in
            let error = error as? DatabaseError
            return error?.code == .migrationFailed
                && error?.message.contains("0002_bad failed at line 3") == true
                && error?.message.contains("\"missing\" does not exist") == true
                && error?.sqlState == "42P01"
        }
        #expect(try await appliedVersions(url) == [1])
        #expect(try await tableExists("good", in: url))
        #expect(try await !tableExists("half", in: url))
    }

    @Test(.emptyDatabase) func reportsMigrationsUnknownToThisBuild() async throws {
        let url = try TestDatabase.current.url
        let one = Migration(version: 1, name: "one", sql: "SELECT 1;")
        let two = Migration(version: 2, name: "two", sql: "SELECT 2;")
        _ = try await url.withConnection(logger: logger) { try await Migrator(migrations: [one, two]).migrate(on: $0, logger: logger) }
        let older = try Migrator(migrations: [one])
        let report = try await url.withConnection(logger: logger) { try await older.migrate(on: $0, logger: logger) }
        #expect(report.applied.isEmpty)
        let statuses = try await url.withConnection(logger: logger) { try await older.status(on: $0, logger: logger) }
        if case .unknown = statuses.last?.state {} else { Issue.record("expected unknown, got \(String(describing: statuses.last))") }
    }

    @Test(.emptyDatabase) func statusOnAnEmptyDatabaseListsEverythingPending() async throws {
        let url = try TestDatabase.current.url
        let statuses = try await url.withConnection(logger: logger) { try await Migrator().status(on: $0, logger: logger) }
        #expect(statuses.count == Migration.bundled.count)
        #expect(statuses.allSatisfy { $0.state == .pending })
        #expect(try await !tableExists("schema_migrations", in: url))
    }

    @Test func refusesTwoMigrationsWithOneVersion() {
        #expect(throws: DatabaseError.self) {
            try Migrator(migrations: [Migration(version: 1, name: "a", sql: ""), Migration(version: 1, name: "b", sql: "")])
        }
    }

    /// Two runs start while a third party holds the lock: both wait, then one applies and
    /// the other finds nothing to do.
    @Test(.emptyDatabase) func concurrentRunsApplyEachMigrationOnce() async throws {
        let url = try TestDatabase.current.url
        let migrator = try Migrator()
        let key = Migrator.advisoryLockKey
        try await url.withConnection(logger: logger) { holder in
            try await holder.query("SELECT pg_advisory_lock(\(key))", logger: logger)

            try await withThrowingTaskGroup(of: MigrationReport.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await url.withConnection(logger: logger) { try await migrator.migrate(on: $0, logger: logger) }
                    }
                }
                // Wait until both runs are blocked on the lock, then let them go.
                var waiting = 0
                for _ in 0..<200 where waiting < 2 {
                    waiting = try await holder.query(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        logger: logger
                    ).collect().first!.decode(Int.self)
                    if waiting < 2 { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(waiting == 2)
                try await holder.query("SELECT pg_advisory_unlock(\(key))", logger: logger)

                var reports: [MigrationReport] = []
                for try await report in group { reports.append(report) }
                #expect(reports.allSatisfy { $0.waitedForLock })
                // Each migration was applied once, by one run or the other.
                let applied = reports.flatMap { $0.applied.map(\.migration.version) }.sorted()
                #expect(applied == Migration.bundled.map(\.version))
            }
        }
        #expect(try await appliedVersions(url) == Migration.bundled.map(\.version))
    }

    /// Advisory locks held on `url`'s database by any session.
    private func advisoryLocks(_ url: DatabaseURL) async throws -> Int {
        try await url.withConnection(logger: logger) { connection in
            try await connection.query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                logger: logger
            ).collect().first!.decode(Int.self)
        }
    }

    /// `DATABASE_URL` may go through a transaction pooler, which runs each transaction on
    /// whichever server connection is free and keeps those connections open. A lock taken
    /// for a session there stays behind on one of them, and the next deploy waits forever.
    /// After a run through one, no lock is left, the next run does not wait, and two runs
    /// at once through it still apply each migration once.
    @Test(.emptyDatabase, .timeLimit(.minutes(3))) func throughATransactionPoolerNoLockIsLeftBehind() async throws {
        let url = try TestDatabase.current.url
        try await TransactionPooler.with(upstream: url) { pooler throws in
            let first = try await pooler.url.withConnection(logger: logger) { try await Migrator().migrate(on: $0, logger: logger) }
            #expect(first.applied.map(\.migration.version) == Migration.bundled.map(\.version))
            try #require(try await advisoryLocks(url) == 0, "a migration lock stayed behind on one of the pooler's server connections")

            let next = try await pooler.url.withConnection(logger: logger) { try await Migrator().migrate(on: $0, logger: logger) }
            #expect(next.applied.isEmpty && !next.waitedForLock)

            // A deploy with two new migrations, from two processes at once.
            let newer = try Migrator(migrations: Migration.bundled + [
                Migration(version: 9001, name: "extra_a", sql: "CREATE TABLE extra_a (x int);\nSELECT pg_sleep(0.2);\n"),
                Migration(version: 9002, name: "extra_b", sql: "CREATE TABLE extra_b (x int);\nSELECT pg_sleep(0.2);\n"),
            ])
            async let one = pooler.url.withConnection(logger: logger) { try await newer.migrate(on: $0, logger: logger) }
            async let two = pooler.url.withConnection(logger: logger) { try await newer.migrate(on: $0, logger: logger) }
            let reports = try await [one, two]
            #expect(reports.flatMap { $0.applied.map(\.migration.version) }.sorted() == [9001, 9002])
            #expect(try await advisoryLocks(url) == 0)
        }
        #expect(try await appliedVersions(url) == Migration.bundled.map(\.version) + [9001, 9002])
    }
}
