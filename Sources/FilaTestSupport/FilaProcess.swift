import Foundation

/// Runs the built `fila` executable as a child process, the way users and orchestrators do.
public struct FilaProcess: Sendable {
    public struct Output: Sendable {
        public let status: Int32
        public let standardOutput: String
        public let standardError: String

        /// Standard error split into non-empty lines.
        public var errorLines: [String] {
            standardError.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        }
    }

    /// The `fila` binary next to the test bundle (`swift test` builds it), or `$FILA_BINARY`.
    public static func executableURL() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["FILA_BINARY"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        // On macOS the test binary sits inside an .xctest bundle.
        while directory.pathExtension == "xctest" || directory.lastPathComponent == "MacOS" || directory.lastPathComponent == "Contents" {
            directory.deleteLastPathComponent()
        }
        let candidate = directory.appendingPathComponent("fila")
        guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
            throw TestSetupError("no fila executable at \(candidate.path); build it with `swift build` or set FILA_BINARY")
        }
        return candidate
    }

    /// A clean environment for the child: PATH and HOME only, plus `environment`.
    public static func environment(_ extra: [String: String]) -> [String: String] {
        var environment: [String: String] = [:]
        let current = ProcessInfo.processInfo.environment
        for key in ["PATH", "HOME"] { environment[key] = current[key] }
        environment.merge(extra) { _, new in new }
        return environment
    }

    /// Runs `fila ARGUMENTS` to completion and returns its status and output. `input`, when
    /// given, is written to its standard input (otherwise it reads an empty one).
    public static func run(_ arguments: [String], environment extra: [String: String] = [:], input: Data? = nil) async throws -> Output {
        let process = try start(arguments, environment: extra, input: input)
        return await process.waitForExit()
    }

    /// Starts `fila ARGUMENTS` and returns at once; pair with `waitForExit()` or `terminate`.
    public static func start(_ arguments: [String], environment extra: [String: String] = [:], input: Data? = nil) throws -> RunningFila {
        let process = Process()
        process.executableURL = try executableURL()
        process.arguments = arguments
        process.environment = environment(extra)
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        let stdin = input.map { _ in Pipe() }
        process.standardInput = stdin ?? FileHandle.nullDevice
        let running = RunningFila(process: process, stdout: stdout, stderr: stderr)
        try process.run()
        if let stdin, let input {
            // On a thread of its own: a large input must not block the caller while the
            // child is still busy reading.
            let writer = stdin.fileHandleForWriting
            Thread.detachNewThread {
                writer.write(input)
                try? writer.close()
            }
        }
        return running
    }
}

/// A `fila` child process. Its output is drained continuously so it never blocks on a
/// full pipe.
public final class RunningFila: @unchecked Sendable {
    private let process: Process
    private let stdoutCollector: PipeCollector
    private let stderrCollector: PipeCollector
    private let exited: Task<Int32, Never>

    init(process: Process, stdout: Pipe, stderr: Pipe) {
        self.process = process
        self.stdoutCollector = PipeCollector(stdout)
        self.stderrCollector = PipeCollector(stderr)
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { process in
            continuation.yield(process.terminationStatus)
            continuation.finish()
        }
        self.exited = Task {
            for await status in stream { return status }
            return -1
        }
    }

    /// A process its test did not stop (the test threw first) is killed, not left running
    /// against the test server for the rest of the run.
    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var processIdentifier: Int32 { process.processIdentifier }

    /// Whether it has not exited yet.
    public var isRunning: Bool { process.isRunning }

    /// Sends a signal (SIGTERM by default) to the process.
    public func signal(_ signal: Int32 = SIGTERM) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit and returns everything it wrote.
    public func waitForExit() async -> FilaProcess.Output {
        let status = await exited.value
        return FilaProcess.Output(
            status: status,
            standardOutput: stdoutCollector.finish(),
            standardError: stderrCollector.finish()
        )
    }

    /// What the process has written to standard error so far.
    public var standardErrorSoFar: String { stderrCollector.snapshot() }

    /// The port the process says it listens on (`<what> listening on 127.0.0.1:PORT` in its
    /// log), waiting up to `timeout` for it; otherwise the process is killed and the error
    /// carries its log.
    public func listeningPort(_ what: String = "listening on", timeout: Duration = .seconds(60)) async throws -> Int {
        let pattern = NSRegularExpression.escapedPattern(for: what) + #" 127\.0\.0\.1:(\d+)"#
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let log = standardErrorSoFar
            if let range = log.range(of: pattern, options: .regularExpression),
               let port = log[range].split(separator: ":").last.flatMap({ Int($0) }) {
                return port
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        signal(SIGKILL)
        throw TestSetupError("fila never said where it listens (\(what)):\n\(await waitForExit().standardError)")
    }

    /// Waits up to `timeout` for `text` in the process's log; otherwise the process is killed
    /// and the error carries its log.
    public func waitForLog(_ text: String, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if standardErrorSoFar.contains(text) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        signal(SIGKILL)
        throw TestSetupError("fila never logged \"\(text)\":\n\(await waitForExit().standardError)")
    }
}

/// Reads a pipe on a background thread until EOF.
final class PipeCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ pipe: Pipe) {
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                lock.lock()
                data.append(chunk)
                lock.unlock()
            }
            done.signal()
        }
    }

    func snapshot() -> String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }

    func finish() -> String {
        done.wait()
        done.signal()
        return snapshot()
    }
}
