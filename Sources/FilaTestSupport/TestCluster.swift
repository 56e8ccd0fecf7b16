import Database
import Foundation

/// A Postgres cluster of a test's own, for tests that stop or restart the server (which
/// would disturb every other test on the shared one). Started with ops/lib/postgres.sh.
public final class TestCluster: Sendable {
    public let url: DatabaseURL
    private let directory: String
    private let binaries: String
    private let owner: String

    private static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs `body` with a new cluster, stopped and deleted afterwards.
    public static func with<Result: Sendable>(_ body: (TestCluster) async throws -> Result) async throws -> Result {
        let cluster = try await start(name: "tc-" + String(UInt32.random(in: 0...UInt32.max), radix: 16))
        do {
            let result = try await body(cluster)
            await cluster.stop()
            return result
        } catch {
            await cluster.stop()
            throw error
        }
    }

    private static func start(name: String) async throws -> TestCluster {
        let output = try await run(
            "/bin/bash",
            ["-c", #"source ops/lib/postgres.sh && pg_start "$1" fast >/dev/null && printf '%s\n' "$PG_URL" "$PG_DIR" "$PG_BIN" "$PG_OWNER""#, "bash", name]
        )
        let lines = output.split(separator: "\n").map(String.init)
        guard lines.count == 4 else { throw TestSetupError("could not start a Postgres cluster: \(output)") }
        return TestCluster(url: try DatabaseURL(lines[0]), directory: lines[1], binaries: lines[2], owner: lines[3])
    }

    private init(url: DatabaseURL, directory: String, binaries: String, owner: String) {
        self.url = url
        self.directory = directory
        self.binaries = binaries
        self.owner = owner
    }

    /// Stops the server abruptly (clients see their connections drop) and starts it again
    /// on the same port.
    public func restart() async throws {
        try await clusterCommand(#"pg_restart_dir "$1""#)
    }

    public func stopServer() async throws {
        try await clusterCommand(#"pg_as_owner "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null"#)
    }

    public func startServer() async throws {
        try await clusterCommand(
            #"pg_without_inherited_fds pg_as_owner "$PG_BIN/pg_ctl" -D "$1/data" -l "$1/server.log" -o "-p "# + String(url.port)
                + #" " -w -t 60 start >/dev/null"#
        )
    }

    /// Runs `script` with ops/lib/postgres.sh loaded for this cluster; `$1` is its folder.
    private func clusterCommand(_ script: String) async throws {
        _ = try await Self.run(
            "/bin/bash",
            ["-c", #"set -euo pipefail; source ops/lib/postgres.sh; PG_BIN=$2; PG_OWNER=$3; set -- "$1"; "# + script, "bash", directory, binaries, owner]
        )
    }

    func stop() async {
        try? await stopServer()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a command to completion without blocking a thread. Its output goes to a file, not
    /// a pipe: a server it starts may keep inherited descriptors open long after it exits.
    @discardableResult
    private static func run(_ executable: String, _ arguments: [String]) async throws -> String {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("fila-cluster-\(UUID().uuidString).out").path
        guard FileManager.default.createFile(atPath: outputPath, contents: nil), let output = FileHandle(forWritingAtPath: outputPath) else {
            throw TestSetupError("cannot create \(outputPath)")
        }
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        try? output.close()
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw TestSetupError("\(executable) \(arguments.joined(separator: " ")) exited \(status): \(text)")
        }
        return text
    }
}
