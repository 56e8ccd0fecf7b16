import Database
import PostgresNIO

/// A role of Fila's that a person's login is made a member of (migration 0019).
public enum FilaRole: String, Sendable, CaseIterable {
    /// Reads the `ops` views and Fila's tables.
    case reader = "fila_reader"
    /// A reader that calls the `ops` functions, with no direct writes.
    case `operator` = "fila_operator"
    /// Calls `fila.enqueue` and `fila.enqueue_batch`.
    case producer = "fila_producer"
}

extension TestDatabase {
    /// Runs `body` with a pool on the running test's database, logged in as a new login that
    /// is a member of `role` (and of `alsoIn`, `fila_guardrail_bypass` say), as a person's own
    /// login is made (RUNBOOK 8); drops the login after.
    ///
    /// ```swift
    /// try await TestDatabase.withLogin(in: .operator) { client, login in
    ///     _ = try await client.query("SELECT ops.pause_sending('test')", logger: logger).collect()
    /// }
    /// ```
    @discardableResult
    public static func withLogin<Result: Sendable>(
        in role: FilaRole,
        alsoIn otherRoles: [String] = [],
        _ body: (PostgresClient, String) async throws -> Result
    ) async throws -> Result {
        let database = try current
        // Roles are cluster-wide and tests run in parallel: a name of its own.
        let login = "fila_test_login_" + randomSuffix()
        try await database.url.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(login) LOGIN IN ROLE \(([role.rawValue] + otherRoles).joined(separator: ", "))"), logger: logger)
        }
        var url = database.url
        url.username = login
        url.password = nil
        do {
            let result = try await withClient(url) { client in try await body(client, login) }
            await dropLogin(login, on: database.url)
            return result
        } catch {
            await dropLogin(login, on: database.url)
            throw error
        }
    }

    /// Drops a test's login once its sessions have gone (a session's temporary tables belong
    /// to it until the session ends).
    private static func dropLogin(_ login: String, on url: DatabaseURL) async {
        for _ in 0..<50 {
            do {
                try await url.withConnection(logger: logger) { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(login)"), logger: logger)
                }
                return
            } catch {
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        logger.warning("test login not dropped", metadata: ["login": .string(login)])
    }
}
