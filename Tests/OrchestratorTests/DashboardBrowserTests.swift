import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The dashboard as a person sees it: a real `fila serve` over a database with something in
/// every section, opened in headless Chromium (`FILA_TEST_CHROMIUM`, which `ops/test`
/// installs and sets) through the `?token=` login, its DOM read after the page's script ran.
/// Screenshots go to `.run/dashboard.png` and `.run/dashboard-phone.png` for people to look at.
@Suite("Dashboard in a browser", .migratedDatabase, .serialized, .timeLimit(.minutes(3)))
struct DashboardBrowserTests {
    let token = "dashboard-browser-token-0123456789"

    @Test func chromiumRendersEverySectionWithLiveData() async throws {
        let chromium = try #require(
            ProcessInfo.processInfo.environment["FILA_TEST_CHROMIUM"].flatMap { $0.isEmpty ? nil : $0 },
            "FILA_TEST_CHROMIUM is not set: run the tests with ops/test, which installs Debian's chromium and sets it to its path"
        )
        try await DashboardFixture.insert(into: try TestDatabase.current.client, logger: TestDatabase.logger)
        let (fila, port) = try await startServe(try TestDatabase.current.url)
        let login = "http://127.0.0.1:\(port)/dashboard?token=\(token)"

        let dom = try await Chromium(path: chromium).run(["--dump-dom", login])
        #expect(dom.status == 0, "\(dom.standardError)")
        let page = dom.standardOutput
        // The inline script ran: the content security policy's hash matches it.
        #expect(page.contains(#"data-refresh="on""#), "the refresh script did not run:\n\(dom.standardError)")
        for id in ["queue", "sends", "workers", "circuits", "jobs", "alerts", "pause"] {
            #expect(page.contains("<section id=\"\(id)\""), "section \(id) in:\n\(page.prefix(3000))")
        }
        let expected = [
            "<code>\(DashboardFixture.worker)</code>",
            "<code>\(DashboardFixture.openCircuit)</code> <span class=\"pill bad\">OPEN</span>",
            "probe failed: HTTP 503",
            "<code>\(DashboardFixture.lateJob)</code></td><td><span class=\"pill bad\">late</span>",
            DashboardFixture.alertTitle,
            DashboardFixture.pauseMotivo,
            "<b id=\"sends-total\">\(DashboardFixture.sentLastHour)</b>",
            "<svg class=\"chart\"",
            "<span class=\"value\">\(DashboardFixture.pending)</span><span class=\"label\">pending</span>",
        ]
        for text in expected {
            #expect(page.contains(text), "\(text) in the DOM")
        }

        // Ten seconds on (virtual time), the script has fetched the page again with the cookie
        // and swapped it in.
        let later = try await Chromium(path: chromium).run(["--virtual-time-budget=\(12_000)", "--dump-dom", login])
        #expect(later.standardOutput.contains(#"data-refreshed="1""#), "no refresh in:\n\(later.standardOutput.prefix(300))\n\(later.standardError)")
        #expect(later.standardOutput.contains("<section id=\"circuits\""))

        let run = try packageRoot().appendingPathComponent(".run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        for (name, size) in [("dashboard.png", "1280,1600"), ("dashboard-phone.png", "390,2300")] {
            let file = run.appendingPathComponent(name)
            try? FileManager.default.removeItem(at: file)
            let shot = try await Chromium(path: chromium).run(["--screenshot=\(file.path)", "--window-size=\(size)", "--hide-scrollbars", login])
            #expect(shot.status == 0, "\(shot.standardError)")
            let bytes = try Data(contentsOf: file)
            #expect(bytes.count > 10_000, "\(name) is \(bytes.count) bytes")
            #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]), "\(name) is a PNG")
        }
        fila.signal(SIGTERM)
        #expect(await fila.waitForExit().status == 0)
    }

    /// `fila serve` on a free port with the dashboard token, and the port it reports.
    private func startServe(_ url: DatabaseURL) async throws -> (RunningFila, Int) {
        let fila = try FilaProcess.start(["serve"], environment: [
            "DATABASE_URL": url.connectionString, "HOST": "127.0.0.1", "PORT": "0", "DASHBOARD_TOKEN": token,
        ])
        return (fila, try await fila.listeningPort())
    }

    private func packageRoot() throws -> URL {
        // Tests/OrchestratorTests/<this file>
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

/// Headless Chromium run once to the end, with a time limit; its output goes through files,
/// so a chatty browser never blocks on a full pipe.
private struct Chromium {
    let path: String
    var timeLimit: Duration = .seconds(60)

    struct Output {
        let status: Int32
        let standardOutput: String
        let standardError: String
    }

    func run(_ arguments: [String]) async throws -> Output {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fila-chromium-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let stdout = scratch.appendingPathComponent("stdout")
        let stderr = scratch.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: stdout.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--user-data-dir=\(scratch.appendingPathComponent("profile").path)",
        ] + arguments
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        process.standardInput = FileHandle.nullDevice
        let (exited, continuation) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { continuation.yield($0.terminationStatus); continuation.finish() }
        try process.run()
        let pid = process.processIdentifier
        let limit = timeLimit
        let watchdog = Task {
            do {
                try await Task.sleep(for: limit)
            } catch {
                return false
            }
            kill(pid, SIGKILL)
            return true
        }
        var status: Int32 = -1
        for await value in exited { status = value }
        watchdog.cancel()
        if await watchdog.value {
            throw TestSetupError("chromium \(arguments.joined(separator: " ")) took more than \(limit): killed")
        }
        return Output(
            status: status,
            standardOutput: (try? String(contentsOf: stdout, encoding: .utf8)) ?? "",
            standardError: (try? String(contentsOf: stderr, encoding: .utf8)) ?? ""
        )
    }
}
