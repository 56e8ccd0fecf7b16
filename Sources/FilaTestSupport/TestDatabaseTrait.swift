import Database
import PostgresNIO
import Testing

/// A Swift Testing trait that runs each test in a database of its own, with a running
/// connection pool on it, and drops the database afterwards, whether the test passed,
/// failed or threw.
///
/// On a test it scopes that test (each case of a parameterised test gets its own database);
/// on a suite it scopes every test in the suite, one database per test. When a suite and
/// one of its tests both carry one, the test's own wins and only one database is made.
///
/// ```swift
/// @Test(.migratedDatabase) func enqueueStoresTheRow() async throws {
///     let client = try TestDatabase.current.client
///     let url = try TestDatabase.current.url  // for a second pool, or a child process
///     …
/// }
/// ```
public struct TestDatabaseTrait: TestTrait, SuiteTrait, TestScoping {
    /// What the new database holds.
    public enum Contents: Sendable, Hashable {
        /// The whole schema, copied from a migrated template.
        case migrated
        /// Nothing: a copy of `template0`.
        case empty
    }

    public let contents: Contents
    /// The size of the pool `TestDatabase.current.client` runs.
    public let maximumConnections: Int

    public init(_ contents: Contents, maximumConnections: Int = 8) {
        self.contents = contents
        self.maximumConnections = maximumConnections
    }

    /// On a suite, every test in it gets a database of its own.
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test,
        testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        // A suite's trait is applied to each of its tests before the test's own traits, so
        // the last database trait of the test is the innermost one: only that one makes a
        // database, and the outer ones pass through.
        let traits = test.traits.filter { $0 is TestDatabaseTrait }.count
        let entered = Self.entered + 1
        guard entered >= traits else {
            try await Self.$entered.withValue(entered) { try await function() }
            return
        }
        try await Self.$entered.withValue(0) {
            try await withScope(function)
        }
    }

    /// Runs `body` in a new database of this kind, which is `TestDatabase.current` inside
    /// it, and drops the database after: what the trait does around a test, for a test
    /// that needs a second database.
    ///
    /// ```swift
    /// try await TestDatabaseTrait.migratedDatabase.withScope {
    ///     let other = try TestDatabase.current.client
    ///     …
    /// }
    /// ```
    public func withScope<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        try await TestDatabase.withFresh(contents) { url in
            try await TestDatabase.withClient(url, maximumConnections: maximumConnections) { client in
                try await TestDatabase.$scoped.withValue(ScopedTestDatabase(url: url, client: client)) {
                    try await body()
                }
            }
        }
    }

    /// How many database traits of the running test have been entered so far.
    @TaskLocal private static var entered = 0
}

extension Trait where Self == TestDatabaseTrait {
    /// A fresh database holding the whole schema, and a pool of 8 connections on it.
    public static var migratedDatabase: Self { TestDatabaseTrait(.migrated) }

    /// A fresh database holding the whole schema, and a pool of `maximumConnections` on it.
    public static func migratedDatabase(maximumConnections: Int) -> Self {
        TestDatabaseTrait(.migrated, maximumConnections: maximumConnections)
    }

    /// A fresh, empty database (nothing migrated), and a pool of 8 connections on it.
    public static var emptyDatabase: Self { TestDatabaseTrait(.empty) }
}

/// The database a `TestDatabaseTrait` made for the running test.
public struct ScopedTestDatabase: Sendable {
    /// The database's URL: for a pool or connection of the test's own, or a child process.
    public let url: DatabaseURL
    /// A running pool on the database, stopped when the test ends.
    public let client: PostgresClient
}

extension TestDatabase {
    @TaskLocal static var scoped: ScopedTestDatabase?

    /// The database of the running test, made by its `.migratedDatabase` or `.emptyDatabase`
    /// trait. Child tasks see it too; a detached task does not.
    public static var current: ScopedTestDatabase {
        get throws {
            guard let scoped else {
                throw TestSetupError("this test has no database of its own: give it (or its suite) the .migratedDatabase or .emptyDatabase trait")
            }
            return scoped
        }
    }

    static func withFresh<Result: Sendable>(
        _ contents: TestDatabaseTrait.Contents,
        _ body: (DatabaseURL) async throws -> Result
    ) async throws -> Result {
        switch contents {
        case .migrated: try await withMigrated(body)
        case .empty: try await withEmpty(body)
        }
    }
}
