import Database
import FilaTestSupport
import PostgresNIO
import Synchronization
import Testing

private let logger = TestDatabase.logger

/// `.migratedDatabase` and `.emptyDatabase` give each test a database of its own, and drop it.
@Suite("Each test gets a database of its own", .migratedDatabase)
struct TestDatabaseTraitTests {
    /// The databases the cases of `aMigratedDatabaseOfItsOwn` were given.
    private static let given = Mutex<Set<String>>([])

    /// Whether the test server has a database of this name, asked from its maintenance database.
    private func exists(_ name: String) async throws -> Bool {
        try await TestDatabase.serverURL().withConnection(logger: logger) { connection in
            try await connection.query("SELECT count(*) FROM pg_database WHERE datname = \(name)", logger: logger)
                .collect().first?.decode(Int.self) == 1
        }
    }

    @Test(arguments: 1...3) func aMigratedDatabaseOfItsOwn(case: Int) async throws {
        let database = try TestDatabase.current
        let row = try #require(
            try await database.client.query("SELECT current_database(), (SELECT count(*) FROM schema_migrations)", logger: logger)
                .collect().first
        )
        let (name, migrations) = try row.decode((String, Int).self)
        #expect(name == database.url.database)
        #expect(migrations == Migration.bundled.count)
        #expect(try await exists(name))
        #expect(Self.given.withLock { $0.insert(name).inserted }, "\(name) was given to two tests")
    }

    /// The suite's trait passes through; the test's own makes the database.
    @Test(.emptyDatabase) func aTestsOwnTraitWinsOverItsSuites() async throws {
        let row = try #require(
            try await TestDatabase.current.client.query("SELECT to_regclass('schema_migrations') IS NULL", logger: logger).collect().first
        )
        #expect(try row.decode(Bool.self))
    }

    @Test func aDatabaseIsDroppedAfterItsScopeEvenWhenTheScopeFails() async throws {
        struct Failure: Error {}
        let outer = try TestDatabase.current.url.database
        var inner: String?
        do {
            try await TestDatabaseTrait.migratedDatabase.withScope {
                let name = try TestDatabase.current.url.database
                inner = name
                #expect(name != outer)
                #expect(try await exists(name))
                throw Failure()
            }
            Issue.record("the scope's error was not rethrown")
        } catch is Failure {}
        let dropped = try #require(inner)
        #expect(try await !exists(dropped))
        // Back in the test's own database, which is still there.
        #expect(try TestDatabase.current.url.database == outer)
        #expect(try await exists(outer))
    }
}
