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

    @Test func migratesAnEmptyDatabaseThenDoesNothing() async throws {
        try await TestDatabase.withEmpty { url throws in
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
    }

    @Test func recordsTheServersSHA256OfEachFile() async throws {
        try await TestDatabase.withEmpty { url throws in
            let migration = Migration(version: 1, name: "one", sql: "CREATE TABLE one (x int);\n")
            _ = try await url.withConnection(logger: logger) { try await Migrator(migrations: [migration]).migrate(on: $0, logger: logger) }
            let checksum = try await url.withConnection(logger: logger) { connection in
                try await connection.query("SELECT checksum FROM schema_migrations WHERE version = 1", logger: logger).collect().first!.decode(String.self)
            }
            // What `sha256sum` prints for the file, so ops/migrate-with-psql records the same.
            #expect(checksum == "5509e238696e4303d02387f86e81b845cd33e8feaaf079c56e608aef95546667")
        }
    }

    @Test func refusesAnAppliedMigrationThatChanged() async throws {
        try await TestDatabase.withEmpty { url throws in
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
    }

    @Test func rollsBackAFailedMigrationWhole() async throws {
        try await TestDatabase.withEmpty { url throws in
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
    }

    @Test func reportsMigrationsUnknownToThisBuild() async throws {
        try await TestDatabase.withEmpty { url throws in
            let one = Migration(version: 1, name: "one", sql: "SELECT 1;")
            let two = Migration(version: 2, name: "two", sql: "SELECT 2;")
            _ = try await url.withConnection(logger: logger) { try await Migrator(migrations: [one, two]).migrate(on: $0, logger: logger) }
            let older = try Migrator(migrations: [one])
            let report = try await url.withConnection(logger: logger) { try await older.migrate(on: $0, logger: logger) }
            #expect(report.applied.isEmpty)
            let statuses = try await url.withConnection(logger: logger) { try await older.status(on: $0, logger: logger) }
            if case .unknown = statuses.last?.state {} else { Issue.record("expected unknown, got \(String(describing: statuses.last))") }
        }
    }

    @Test func statusOnAnEmptyDatabaseListsEverythingPending() async throws {
        try await TestDatabase.withEmpty { url throws in
            let statuses = try await url.withConnection(logger: logger) { try await Migrator().status(on: $0, logger: logger) }
            #expect(statuses.count == Migration.bundled.count)
            #expect(statuses.allSatisfy { $0.state == .pending })
            #expect(try await !tableExists("schema_migrations", in: url))
        }
    }

    @Test func refusesTwoMigrationsWithOneVersion() {
        #expect(throws: DatabaseError.self) {
            try Migrator(migrations: [Migration(version: 1, name: "a", sql: ""), Migration(version: 1, name: "b", sql: "")])
        }
    }

    /// Two runs start while a third party holds the lock: both wait, then one applies and
    /// the other finds nothing to do.
    @Test func concurrentRunsApplyEachMigrationOnce() async throws {
        try await TestDatabase.withEmpty { url throws in
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
                    let appliedCounts = reports.map(\.applied.count).sorted()
                    #expect(appliedCounts == [0, Migration.bundled.count])
                }
            }
            #expect(try await appliedVersions(url) == Migration.bundled.map(\.version))
        }
    }
}
