#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import NIOCore
import PostgresNIO
import Primitives

/// Applies `Migrations/*.sql` in order and records each one in `schema_migrations`.
///
/// Replicas may all run `fila migrate` at start-up. Each migration applies in its own
/// transaction together with its `schema_migrations` row, and that transaction first takes
/// a transaction-scoped advisory lock (`pg_advisory_xact_lock`, as `ops/migrate-with-psql`
/// does) and then checks again whether the version was recorded meanwhile: concurrent runs
/// wait for each other, and each migration is applied once, in order, by whichever run
/// takes its lock first. No lock outlives its transaction, so the runner is safe through a
/// transaction pooler (PgBouncer), where a session lock would stay behind on a server
/// connection and make the next deploy wait forever. The primary key is a second fence.
/// An applied migration whose text has changed since is refused: fix forward with a new file.
///
/// ```swift
/// let report = try await databaseURL.withConnection(logger: logger) { connection in
///     try await Migrator().migrate(on: connection, logger: logger)
/// }
/// ```
public struct Migrator: Sendable {
    /// The advisory lock key of a migration run ('fila_mig' as a big-endian bigint);
    /// `ops/migrate-with-psql` takes the same one.
    public static let advisoryLockKey: Int64 = 7_379_548_629_891_901_799

    /// The DDL of the bookkeeping table, kept identical in `ops/migrate-with-psql`.
    static let createSchemaMigrations: PostgresQuery = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now(),
            duration_ms integer
        )
        """

    public let migrations: [Migration]

    /// - Throws: `DatabaseError` `.invalidMigration` when two migrations share a version.
    public init(migrations: [Migration] = Migration.bundled) throws(DatabaseError) {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.version == next.version {
            throw DatabaseError(.invalidMigration, "migrations \(previous.identifier) and \(next.identifier) share version \(next.version)")
        }
        self.migrations = sorted
    }

    /// Applies every pending migration and returns what was done.
    public func migrate(on connection: PostgresConnection, logger: Logger) async throws -> MigrationReport {
        let checksums = try await checksums(on: connection, logger: logger)
        // The bookkeeping table, created under the lock (two first runs would otherwise race
        // on CREATE TABLE IF NOT EXISTS), and what it holds.
        var (recorded, waited) = try await withRunLock(on: connection, logger: logger) { connection in
            try await connection.query(Self.createSchemaMigrations, logger: logger)
            return try await recordedMigrations(on: connection, logger: logger)
        }
        for migration in migrations {
            if let row = recorded[migration.version] { try verify(migration, recorded: row, checksums: checksums) }
        }

        var applied: [MigrationReport.Applied] = []
        for migration in migrations where recorded[migration.version] == nil {
            let checksum = checksums[migration.version] ?? ""
            let (outcome, waitedHere) = try await apply(migration, checksum: checksum, on: connection, logger: logger)
            waited = waited || waitedHere
            switch outcome {
            case .applied(let milliseconds):
                applied.append(.init(migration: migration, durationMilliseconds: milliseconds))
            case .appliedElsewhere(let row):
                // Another run took the lock first and applied it meanwhile.
                recorded[migration.version] = row
            }
        }
        let known = Set(migrations.map(\.version))
        let unknown = recorded.keys.filter { !known.contains($0) }.sorted()
        if !unknown.isEmpty {
            logger.warning(
                "database has migrations this build does not know (applied by a newer fila?)",
                metadata: ["migration.versions": .string(unknown.map(String.init).joined(separator: ","))]
            )
        }
        return MigrationReport(applied: applied, alreadyApplied: recorded.count, waitedForLock: waited)
    }

    private func verify(_ migration: Migration, recorded row: RecordedMigration, checksums: [Int: String]) throws {
        guard row.checksum != checksums[migration.version] else { return }
        throw DatabaseError(
            .migrationChanged,
            "migration \(migration.identifier) was changed after it was applied (database has checksum \(row.checksum.prefix(12)), this build \(checksums[migration.version, default: ""].prefix(12))); restore the file and put the change in a new migration"
        )
    }

    /// Compares the migrations of this build with what the database has recorded.
    public func status(on connection: PostgresConnection, logger: Logger) async throws -> [MigrationStatus] {
        let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL", logger: logger)
            .collect().first?.decode(Bool.self) ?? false
        let recorded = exists ? try await recordedMigrations(on: connection, logger: logger) : [:]
        let checksums = try await checksums(on: connection, logger: logger)

        var statuses: [MigrationStatus] = migrations.map { migration in
            guard let row = recorded[migration.version] else {
                return MigrationStatus(version: migration.version, name: migration.name, state: .pending)
            }
            if row.checksum != checksums[migration.version] {
                return MigrationStatus(version: migration.version, name: migration.name, state: .changed(appliedAt: row.appliedAt))
            }
            return MigrationStatus(version: migration.version, name: migration.name, state: .applied(at: row.appliedAt))
        }
        let known = Set(migrations.map(\.version))
        for (version, row) in recorded where !known.contains(version) {
            statuses.append(MigrationStatus(version: version, name: row.name, state: .unknown(appliedAt: row.appliedAt)))
        }
        return statuses.sorted { $0.version < $1.version }
    }

    // MARK: - Steps

    private struct RecordedMigration {
        let name: String
        let checksum: String
        let appliedAt: Date
    }

    /// Runs `body` in a transaction that first takes the migration lock, transaction-scoped:
    /// it ends with the transaction, whatever connection a pooler ran it on. Also says
    /// whether the lock had to be waited for.
    private func withRunLock<Result: Sendable>(
        on connection: PostgresConnection,
        logger: Logger,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> (Result, waited: Bool) {
        let key = Self.advisoryLockKey
        do {
            return try await connection.withTransaction(logger: logger) { connection in
                let acquired = try await connection.query("SELECT pg_try_advisory_xact_lock(\(key))", logger: logger)
                    .collect().first?.decode(Bool.self) ?? false
                if !acquired {
                    logger.info("another migration run holds the lock; waiting for it to finish")
                    try await connection.query("SELECT pg_advisory_xact_lock(\(key))", logger: logger)
                }
                return (try await body(connection), !acquired)
            }
        } catch let error as PostgresTransactionError {
            // The body's own error (rolled back) is what the caller needs to see.
            throw error.closureError ?? error
        }
    }

    private func recordedMigrations(on connection: PostgresConnection, logger: Logger) async throws -> [Int: RecordedMigration] {
        var recorded: [Int: RecordedMigration] = [:]
        let rows = try await connection.query(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
            logger: logger
        )
        for try await (version, name, checksum, appliedAt) in rows.decode((Int32, String, String, Date).self) {
            recorded[Int(version)] = RecordedMigration(name: name, checksum: checksum, appliedAt: appliedAt)
        }
        return recorded
    }

    /// SHA-256 of each migration's bytes, computed by the server so that the psql path
    /// (`sha256sum`) and this one agree without a crypto dependency.
    private func checksums(on connection: PostgresConnection, logger: Logger) async throws -> [Int: String] {
        var checksums: [Int: String] = [:]
        for migration in migrations {
            let bytes = ByteBuffer(string: migration.sql)
            let rows = try await connection.query("SELECT encode(sha256(\(bytes)), 'hex')", logger: logger)
            checksums[migration.version] = try await rows.collect().first?.decode(String.self)
        }
        return checksums
    }

    private enum ApplyOutcome: Sendable {
        case applied(milliseconds: Int)
        case appliedElsewhere(RecordedMigration)
    }

    /// Applies one migration in a transaction of its own under the lock, unless a run that
    /// held the lock before this one applied it meanwhile.
    private func apply(_ migration: Migration, checksum: String, on connection: PostgresConnection, logger: Logger) async throws -> (ApplyOutcome, waited: Bool) {
        let script: SQLScript
        do {
            script = try SQLScript(migration.sql)
        } catch {
            throw DatabaseError(.invalidMigration, "migration \(migration.identifier) cannot be read: \(error)")
        }
        var logger = logger
        logger[metadataKey: "migration"] = .string(migration.identifier)

        let clock = ContinuousClock()
        var failedStatement: SQLScript.Statement?
        let outcome: ApplyOutcome
        let waited: Bool
        do {
            let locked = try await withRunLock(on: connection, logger: logger) { connection -> ApplyOutcome in
                let rows = try await connection.query(
                    "SELECT name, checksum, applied_at FROM schema_migrations WHERE version = \(Int32(migration.version))",
                    logger: logger
                ).collect()
                if let row = rows.first {
                    let (name, recordedChecksum, appliedAt) = try row.decode((String, String, Date).self)
                    let recorded = RecordedMigration(name: name, checksum: recordedChecksum, appliedAt: appliedAt)
                    try verify(migration, recorded: recorded, checksums: [migration.version: checksum])
                    return .appliedElsewhere(recorded)
                }
                logger.info("applying migration")
                let start = clock.now
                for statement in script.statements {
                    failedStatement = statement
                    try await connection.query(PostgresQuery(unsafeSQL: statement.text), logger: logger)
                }
                failedStatement = nil
                let elapsed = start.duration(to: clock.now)
                let milliseconds = Int32(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
                try await connection.query(
                    """
                    INSERT INTO schema_migrations (version, name, checksum, duration_ms)
                    VALUES (\(Int32(migration.version)), \(migration.name), \(checksum), \(milliseconds))
                    """,
                    logger: logger
                )
                return .applied(milliseconds: Int(milliseconds))
            }
            (outcome, waited) = (locked.0, locked.waited)
        } catch let error as DatabaseError where error.code == .migrationChanged {
            throw error
        } catch {
            let cause = DatabaseError(wrapping: error, context: "statement failed")
            let location = failedStatement.map { " at line \($0.line)" } ?? ""
            throw DatabaseError(
                .migrationFailed,
                "migration \(migration.identifier) failed\(location) and was rolled back: \(cause.message.dropFirst("statement failed: ".count))",
                sqlState: cause.sqlState,
                underlying: error
            )
        }
        if case .applied(let milliseconds) = outcome {
            logger.info("applied migration", metadata: ["duration_ms": .stringConvertible(milliseconds)])
        }
        return (outcome, waited)
    }
}

/// What one `migrate` call did.
public struct MigrationReport: Sendable {
    public struct Applied: Sendable {
        public let migration: Migration
        public let durationMilliseconds: Int
    }

    /// Migrations applied by this run, in order.
    public let applied: [Applied]
    /// How many were already recorded before this run.
    public let alreadyApplied: Int
    /// Whether this run waited for another one to release the lock.
    public let waitedForLock: Bool
}

/// One line of `fila migrate --status`.
public struct MigrationStatus: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case applied(at: Date)
        case pending
        /// Applied, but the file in this build differs from what was applied.
        case changed(appliedAt: Date)
        /// Recorded in the database, unknown to this build.
        case unknown(appliedAt: Date)
    }

    public let version: Int
    public let name: String
    public let state: State

    public var identifier: String { Migration(version: version, name: name, sql: "").identifier }
}
