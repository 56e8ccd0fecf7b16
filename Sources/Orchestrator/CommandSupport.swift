#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import Database
import Logging
import Observability
import PostgresNIO

/// The exit statuses of `fila`, after sysexits(3).
enum FilaExitCode {
    static let failure: Int32 = 1
    static let usage: Int32 = 64
    /// The database's schema is not what this binary expects (a changed migration).
    static let dataError: Int32 = 65
    /// Postgres could not be reached.
    static let unavailable: Int32 = 69
    /// Try again later (a run of the job is still going).
    static let temporaryFailure: Int32 = 75
    /// A configuration value is missing or invalid.
    static let configuration: Int32 = 78
}

/// What every command does first: read the configuration and set up logging.
struct CommandContext: Sendable {
    let configuration: FilaConfiguration
    let logger: Logger

    init(options: GlobalOptions, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) {
        var configuration = try FilaConfiguration(environment: environment)
        try configuration.apply(options)
        LogSetup.bootstrap(format: configuration.logFormat, level: configuration.logLevel)
        var logger = Logger(label: "fila")
        logger.logLevel = configuration.logLevel
        self.configuration = configuration
        self.logger = logger
    }
}

extension CommandContext {
    /// The database URL and the connection pool of a long-running command; the pool runs
    /// as the first service of the command's group.
    func makeClient() throws(ConfigurationError) -> (url: DatabaseURL, client: PostgresClient) {
        let url = try configuration.requireDatabaseURL()
        let client = PostgresClient(
            configuration: url.clientConfiguration(maximumConnections: configuration.databasePoolSize),
            backgroundLogger: logger
        )
        return (url, client)
    }
}

/// Runs a command's body and turns any error into one line on standard error and the
/// matching exit status: users see what went wrong, never a stack trace.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch let error as ConfigurationError {
        printError("fila: \(error)")
        throw ExitCode(FilaExitCode.configuration)
    } catch let error as InputError {
        printError("fila: \(error)")
        throw ExitCode(FilaExitCode.dataError)
    } catch let error as DatabaseError {
        printError("fila: \(error)")
        switch error.code {
        case .unreachable: throw ExitCode(FilaExitCode.unavailable)
        case .migrationChanged, .invalidMigration: throw ExitCode(FilaExitCode.dataError)
        default: throw ExitCode(FilaExitCode.failure)
        }
    } catch {
        printError("fila: \(DatabaseError(wrapping: error, context: "failed"))")
        throw ExitCode(FilaExitCode.failure)
    }
}

func printError(_ line: String) {
    StandardError.write(line.hasSuffix("\n") ? line : line + "\n")
}

/// Writes `text` to standard error as it is (progress bars).
func printErrorRaw(_ text: String) {
    StandardError.write(text)
}
