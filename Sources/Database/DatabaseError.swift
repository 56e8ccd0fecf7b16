import PostgresNIO

/// An error from the database layer, safe to show to a user as it is.
///
/// `description` never holds a password or a row's contents; `debugDescription` adds the
/// underlying driver error for logs.
public struct DatabaseError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case unreachable
            case migrationChanged
            case migrationFailed
            case invalidMigration
            case queryFailed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Postgres could not be reached or refused the connection.
        public static let unreachable = Self(.unreachable)
        /// An applied migration's file no longer matches what was applied.
        public static let migrationChanged = Self(.migrationChanged)
        /// A migration's SQL failed; its transaction was rolled back.
        public static let migrationFailed = Self(.migrationFailed)
        /// A migration file cannot be parsed into statements.
        public static let invalidMigration = Self(.invalidMigration)
        /// Any other failed statement.
        public static let queryFailed = Self(.queryFailed)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String
    /// The SQLSTATE the server answered with, when there was one.
    public let sqlState: String?
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, sqlState: String? = nil, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.underlying = underlying
    }

    public var description: String { message }

    public var debugDescription: String {
        var text = "DatabaseError(\(code)): \(message)"
        if let sqlState { text += " [SQLSTATE \(sqlState)]" }
        if let underlying { text += " underlying: \(String(reflecting: underlying))" }
        return text
    }
}

extension DatabaseError {
    /// Whether the server refused a value (SQLSTATE class 22, data exception, or 23,
    /// integrity constraint violation): the statement wrote nothing, and the same statement
    /// without the offending row may succeed.
    public var refusesData: Bool {
        guard let sqlState else { return false }
        return sqlState.hasPrefix("22") || sqlState.hasPrefix("23")
    }

    /// Wraps a driver error, keeping the server's own message and classifying connection
    /// failures as `unreachable`. What can quote a row's values stays out of `description`
    /// (it is in `debugDescription`): the server's detail ("Failing row contains (…)",
    /// "Key (…)=(…) already exists") for refused data, and a data exception's message when
    /// it quotes the value (`invalid input syntax for type integer: "…"`).
    public init(wrapping error: any Error, context: String) {
        if let error = error as? DatabaseError {
            self = error
            return
        }
        let driverError = (error as? PostgresTransactionError).flatMap { $0.closureError ?? $0.beginError ?? $0.commitError } ?? error
        guard let psql = driverError as? PSQLError else {
            self.init(.queryFailed, "\(context): \(driverError)", underlying: error)
            return
        }
        if let serverMessage = psql.serverInfo?[.message] {
            let sqlState = psql.serverInfo?[.sqlState]
            let quotesData = sqlState.map { $0.hasPrefix("22") || $0.hasPrefix("23") } ?? false
            var message: String
            if let sqlState, sqlState.hasPrefix("22"), serverMessage.contains(where: { $0 == "\"" || $0 == ":" }) {
                // Such messages quote the value: `value "…" is out of range for type integer`.
                message = "\(context): a value was refused (SQLSTATE \(sqlState))"
            } else {
                message = "\(context): \(serverMessage)"
            }
            if !quotesData, let detail = psql.serverInfo?[.detail] { message += " (\(detail))" }
            let isConnectionRefusal = sqlState.map { $0.hasPrefix("08") || $0.hasPrefix("28") || $0 == "3D000" } ?? false
            self.init(isConnectionRefusal ? .unreachable : .queryFailed, message, sqlState: sqlState, underlying: error)
        } else {
            self.init(.unreachable, "\(context): cannot reach Postgres (\(psql.code))", underlying: error)
        }
    }
}
