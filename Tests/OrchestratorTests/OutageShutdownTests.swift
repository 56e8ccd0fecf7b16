import Database
import FilaTestSupport
import Foundation
import Testing

/// SIGTERM while Postgres is away: a process stops as it does with Postgres up, through its
/// graceful shutdown, instead of waiting out `SHUTDOWN_TIMEOUT` for a statement that cannot
/// start and then having its services cancelled (which, past the cancellation limit, crashes).
@Suite("Shutdown during a Postgres outage", .timeLimit(.minutes(3)))
struct OutageShutdownTests {
    @Test func aSchedulerWaitingOnPostgresStopsOnSIGTERM() async throws {
        try await TestCluster.with { cluster throws in
            try await cluster.url.withConnection(logger: TestDatabase.logger) { connection in
                _ = try await Migrator().migrate(on: connection, logger: TestDatabase.logger)
            }
            // An hour to shut down: only a graceful stop ends the process within the test.
            let fila = try FilaProcess.start(["scheduler"], environment: [
                "DATABASE_URL": cluster.url.connectionString, "SHUTDOWN_TIMEOUT": "3600",
            ])
            try await fila.waitForLog("scheduler started")
            try await cluster.stopServer()
            // Ticks now wait for a connection that cannot open.
            try await Task.sleep(for: .seconds(3))
            #expect(fila.isRunning, "\(fila.standardErrorSoFar.suffix(2000))")
            // What the process logs from here on is its shutdown's.
            let logged = fila.standardErrorSoFar.count
            fila.signal(SIGTERM)
            var waited = 0
            while fila.isRunning && waited < 600 {
                try await Task.sleep(for: .milliseconds(100))
                waited += 1
            }
            guard !fila.isRunning else {
                fila.signal(SIGKILL)
                Issue.record("still running a minute after SIGTERM: \(fila.standardErrorSoFar.suffix(2000))")
                return
            }
            let output = await fila.waitForExit()
            #expect(output.status == 0, "\(output.standardError.suffix(2000))")
            #expect(output.standardError.contains("scheduler stopped"))
            // Cut off by the shutdown, not failed: no error for the tick or the alerts. (A tick
            // whose statement the stopping server ended, before, did fail, and says so.)
            let shutdown = String(output.standardError.dropFirst(logged))
            for failure in ["scheduler tick failed", "cannot deliver alerts"] {
                #expect(!shutdown.contains(failure), "\(shutdown.suffix(2000))")
            }
        }
    }
}
