import Logging
import Synchronization

/// How log lines are written to standard error.
public enum LogFormat: String, Sendable, CaseIterable {
    /// One JSON object per line: for log collectors.
    case json
    /// `timestamp level label: message key=value`: for people at a terminal.
    case text
}

/// Process-wide logging set-up, done once by the `fila` command before anything logs.
public enum LogSetup {
    private static let bootstrapped = Mutex(false)

    /// Installs the handler for `format` at `level`. Later calls are ignored, so code paths
    /// that may run more than once in a process (tests) can call it freely.
    public static func bootstrap(format: LogFormat, level: Logger.Level) {
        let first = bootstrapped.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        // The metadata provider adds the task's correlation id to every line.
        LoggingSystem.bootstrap(
            { label, metadataProvider in
                var handler: any LogHandler
                switch format {
                case .json: handler = JSONLogHandler(label: label, metadataProvider: metadataProvider)
                case .text: handler = StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider)
                }
                handler.logLevel = level
                return handler
            },
            metadataProvider: Correlation.metadataProvider
        )
    }
}
