import Database
import FilaTestSupport
import Foundation
import PostgresNIO
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
            // No run under way when Postgres goes: a run has its job's own timeout, and the
            // shutdown waits for it by design. The ticks go on, and wait on Postgres.
            try await cluster.url.withConnection(logger: TestDatabase.logger) { connection in
                func count(_ sql: String) async throws -> Int {
                    try await connection.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).collect()[0].decode(Int.self)
                }
                // Once the scheduler has written its jobs (its first sync, a statement each),
                // none is due today, and nothing claimed is still open, for a whole second.
                var settled = 0
                for _ in 0..<600 {
                    _ = try await count("WITH m AS (UPDATE job_definitions SET next_run_at = now() + interval '1 day' WHERE next_run_at < now() + interval '1 hour' RETURNING 1) SELECT count(*) FROM m")
                    let quiet = try await count("""
                        SELECT count(*) FROM job_definitions
                         WHERE NOT EXISTS (SELECT FROM job_executions WHERE status IN ('pending', 'running'))
                        """)
                    settled = quiet > 0 ? settled + 1 : 0
                    if settled == 10 { return }
                    try await Task.sleep(for: .milliseconds(100))
                }
                Issue.record("the scheduler never synced, or its runs never ended")
            }
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
