import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc

private let streamSocketType = Int32(SOCK_STREAM.rawValue)
private let sendFlags = Int32(MSG_NOSIGNAL)
#elseif canImport(Darwin)
import Darwin

private let streamSocketType = SOCK_STREAM
private let sendFlags: Int32 = 0
#endif

/// A redis-server of a test's own, for tests that stop and restart Redis (which would
/// disturb every other test on a shared one). It keeps nothing on disk, listens on
/// 127.0.0.1 only and requires a random password (in `url`), so another account on the
/// machine cannot use it while it runs. The password reaches the server on its standard
/// input, never on its command line, which every local user can read.
///
/// ```swift
/// try await TestRedis.with { redis in
///     let url = try RedisURL(redis.url)
///     await redis.stop()
///     try await redis.start()
/// }
/// ```
public final class TestRedis: Sendable {
    public let port: Int
    /// The `requirepass` of this server: 32 random hex digits.
    public let password: String
    /// `redis://:PASSWORD@127.0.0.1:PORT`, what `REDIS_URL` takes.
    public var url: String { "redis://:\(password)@127.0.0.1:\(port)" }

    private let executable: String
    private let server = Mutex<RunningServer?>(nil)

    private init(port: Int, executable: String) {
        self.port = port
        self.executable = executable
        self.password = (0..<4).map { _ in String(format: "%08x", UInt32.random(in: 0...UInt32.max)) }.joined()
    }

    /// Runs body with a fresh redis-server (no persistence), stopped afterwards even when body throws.
    public static func with<R: Sendable>(_ body: (TestRedis) async throws -> R) async throws -> R {
        let executable = try serverExecutable()
        var failures: [String] = []
        // A random port may be taken; the server then exits at once and we try another.
        for _ in 0..<5 {
            let redis = TestRedis(port: Int.random(in: 20000...40000), executable: executable)
            switch try await redis.launch() {
            case .exited(let log):
                failures.append("port \(redis.port): \(log)")
            case .ready:
                do {
                    let result = try await body(redis)
                    await redis.stop()
                    return result
                } catch {
                    await redis.stop()
                    throw error
                }
            }
        }
        throw TestSetupError("redis-server would not start after 5 tries: \(failures.joined(separator: "; "))")
    }

    /// Stops the server (SIGKILL, waits for exit). Idempotent.
    public func stop() async {
        let taken = server.withLock { state in
            let current = state
            state = nil
            return current
        }
        guard let running = taken else { return }
        // In a task of its own: a cancelled test must still reap its server.
        await Task { await Self.terminate(running) }.value
    }

    /// Starts it again on the same port; waits until it answers PING.
    public func start() async throws {
        if case .exited(let log) = try await launch() {
            throw TestSetupError("redis-server on port \(port) exited at once: \(log)")
        }
    }

    private enum Launch {
        case ready
        /// The server exited before answering, with the end of its log.
        case exited(String)
    }

    private func launch() async throws -> Launch {
        guard server.withLock({ $0 == nil }) else { return .ready }
        let temporary = FileManager.default.temporaryDirectory
        // The log goes to a file, not a pipe: nobody reads it unless the start fails, and
        // a pipe nobody drains would eventually block the server.
        let logPath = temporary.appendingPathComponent("fila-redis-\(port)-\(UUID().uuidString).log").path
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath) else {
            throw TestSetupError("cannot create \(logPath)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        // "-": the rest of the configuration (the password) comes from standard input.
        process.arguments = [
            "-", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
        ]
        process.currentDirectoryURL = temporary
        let configuration = Pipe()
        process.standardInput = configuration
        process.standardOutput = log
        process.standardError = log
        let running = RunningServer(process: process, logPath: logPath)
        process.terminationHandler = { [running] _ in running.ended.store(true, ordering: .releasing) }
        do {
            try process.run()
        } catch {
            try? log.close()
            try? FileManager.default.removeItem(atPath: logPath)
            throw TestSetupError("cannot run \(executable): \(error)")
        }
        try? log.close()
        // Written and closed at once: the server reads its standard input to the end.
        try? configuration.fileHandleForWriting.write(contentsOf: Data("requirepass \(password)\n".utf8))
        try? configuration.fileHandleForWriting.close()
        try? configuration.fileHandleForReading.close()
        server.withLock { $0 = running }

        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            if running.ended.load(ordering: .acquiring) || !process.isRunning {
                server.withLock { $0 = nil }
                let tail = running.logTail()
                running.removeLog()
                return .exited("status \(process.terminationStatus): \(tail)")
            }
            // The process id tells our server from another one that already had the port.
            if await Self.probe(port: port, password: password) == process.processIdentifier {
                return .ready
            }
            guard ContinuousClock.now < deadline else {
                let tail = running.logTail()
                await stop()
                throw TestSetupError("redis-server on port \(port) did not answer within 10 s: \(tail)")
            }
            do {
                try await Task.sleep(for: .milliseconds(20))
            } catch {
                await stop()
                throw error
            }
        }
    }

    private static func terminate(_ running: RunningServer) async {
        // SIGKILL, not SIGTERM: a child started from the test's threads inherits their
        // blocked signals, so SIGTERM would wait in vain; and with nothing on disk there is
        // nothing for Redis to save. It also models the outage the tests are about: a crash.
        kill(running.process.processIdentifier, SIGKILL)
        _ = await waitForExit(running, within: .seconds(10))
        running.removeLog()
    }

    /// Polls rather than blocking in `waitUntilExit`, which would hold a thread of the
    /// cooperative pool.
    private static func waitForExit(_ running: RunningServer, within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !running.ended.load(ordering: .acquiring) && running.process.isRunning {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// `processIdentifierOfServer` on a thread of its own: its blocking socket calls must not
    /// hold one of the few threads every test's async work shares.
    private static func probe(port: Int, password: String) async -> Int32? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: processIdentifierOfServer(onPort: port, password: password))
            }
        }
    }

    /// The `process_id` that `INFO server` reports on 127.0.0.1:`port` after `AUTH`, or nil
    /// when nothing answers there (yet), or something refuses the password.
    private static func processIdentifierOfServer(onPort port: Int, password: String) -> Int32? {
        let descriptor = socket(AF_INET, streamSocketType, 0)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        // A server that accepts but never answers must not hang the test.
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = in_addr(s_addr: in_addr_t(UInt32(0x7F00_0001).bigEndian))
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return nil }

        let request = Array("AUTH \(password)\r\nINFO server\r\n".utf8)
        let sent = request.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, sendFlags) }
        guard sent == request.count else { return nil }

        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while reply.count < 65536 {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return nil }
            reply.append(contentsOf: chunk[0..<count])
            // An error reply (-LOADING, -WRONGPASS) means not ready, or not ours; "+OK" (the
            // AUTH) comes first, then the INFO text.
            if reply.first == UInt8(ascii: "-") { return nil }
            let text = String(decoding: reply, as: UTF8.self)
            // Not firstIndex(of: "\r"): "\r\n" is a single Character.
            if let label = text.range(of: "process_id:"), let end = text[label.upperBound...].firstIndex(where: \.isNewline) {
                return Int32(text[label.upperBound..<end])
            }
        }
        return nil
    }

    /// `$FILA_TEST_REDIS_SERVER`, else `redis-server` on PATH, else /usr/bin/redis-server.
    private static func serverExecutable() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        let files = FileManager.default
        if let path = environment["FILA_TEST_REDIS_SERVER"], !path.isEmpty {
            guard files.isExecutableFile(atPath: path) else {
                throw TestSetupError("FILA_TEST_REDIS_SERVER is \(path), which is not an executable file")
            }
            return path
        }
        for directory in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/redis-server"
            if files.isExecutableFile(atPath: candidate) { return candidate }
        }
        if files.isExecutableFile(atPath: "/usr/bin/redis-server") { return "/usr/bin/redis-server" }
        throw TestSetupError(
            "redis-server is not installed: run the tests with ops/test, which installs it, or set FILA_TEST_REDIS_SERVER"
        )
    }
}

/// A started redis-server. After launch the process is only read through
/// `processIdentifier`, `isRunning` and `terminationStatus`, which Foundation allows from
/// any thread.
private final class RunningServer: @unchecked Sendable {
    let process: Process
    let logPath: String
    /// Set by the process's termination handler: `isRunning` can lag well behind the exit.
    let ended = Atomic<Bool>(false)

    init(process: Process, logPath: String) {
        self.process = process
        self.logPath = logPath
    }

    /// The end of the server's log, for an error message.
    func logTail() -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? "(no output)" : String(trimmed.suffix(500))
    }

    func removeLog() {
        try? FileManager.default.removeItem(atPath: logPath)
    }
}
