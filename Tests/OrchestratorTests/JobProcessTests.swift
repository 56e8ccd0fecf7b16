import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// `fila job` and `fila scheduler` as operators run them.
@Suite("fila job and fila scheduler", .migratedDatabase, .timeLimit(.minutes(3)))
struct JobProcessTests {
    let logger = TestDatabase.logger

    private func environment(_ url: DatabaseURL) -> [String: String] {
        ["DATABASE_URL": url.connectionString, "LOG_LEVEL": "warning"]
    }

    private func int(_ url: DatabaseURL, _ sql: String) async throws -> Int {
        try await url.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(Int.self)
        }
    }

    @Test func runListAndHistory() async throws {
        let url = try TestDatabase.current.url
        let run = try await FilaProcess.run(["job", "run", "resetar-fila-travada"], environment: environment(url))
        #expect(run.status == 0, "\(run.standardError)")
        let lines = run.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        #expect(lines.first?.hasPrefix("resetar-fila-travada: success in ") == true)
        #expect(lines.last == #"{"judged":false,"rescued":0,"reset":0}"#, "\(run.standardOutput)")
        #expect(try await int(url, "SELECT count(*) FROM job_executions WHERE triggered_by = 'cli' AND status = 'success'") == 1)
        // The run's process heart-beat while it worked, and says it stopped.
        #expect(try await int(url, "SELECT count(*) FROM worker_heartbeats WHERE kind = 'cli' AND status = 'stopped'") == 1)

        let list = try await FilaProcess.run(["job", "list"], environment: environment(url))
        #expect(list.status == 0)
        let rows = list.standardOutput.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(rows.first == ["JOB", "SCHEDULE", "STATE", "LAST", "RUN", "LAST", "STATUS", "NEXT", "RUN"])
        // The built-in jobs and the chips' connection monitor, and the header.
        #expect(rows.count == 14)
        let reset = rows.first { $0.first == "resetar-fila-travada" }
        #expect(reset?[1...3] == ["every", "15m", "ok"])
        #expect(reset?[5] == "success")

        let history = try await FilaProcess.run(["job", "history", "resetar-fila-travada", "--limit", "5"], environment: environment(url))
        #expect(history.status == 0)
        let entries = history.standardOutput.split(separator: "\n")
        #expect(entries.count == 2)
        #expect(entries.last?.contains(#"success  cli  "#) == true)
    }

    @Test func badJobCommandsExitWithTheRightStatus() async throws {
        let url = try TestDatabase.current.url
        let unknown = try await FilaProcess.run(["job", "run", "nao-existe"], environment: environment(url))
        #expect(unknown.status == 64)
        #expect(unknown.errorLines.first?.hasPrefix("fila: no job named 'nao-existe'; jobs: arquivar-fila, ") == true)

        let noHistory = try await FilaProcess.run(["job", "history", "nao-existe"], environment: environment(url))
        #expect(noHistory.status == 64)
        #expect(noHistory.errorLines == ["fila: no job named 'nao-existe' in job_definitions"])

        let unreachable = try await FilaProcess.run(["job", "list"], environment: ["DATABASE_URL": "postgres://u@127.0.0.1:1/db?sslmode=disable"])
        #expect(unreachable.status == 69)
        #expect(unreachable.errorLines.count == 1)

        // A run of the job is going (its lock is held): exit 75, nothing written.
        try await url.withConnection(logger: logger) { connection in
            try await connection.query("BEGIN", logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(\(Int32(0x6669_6A62)), hashtext('limpar-fila-antiga'))", logger: logger)
            let busy = try await FilaProcess.run(["job", "run", "limpar-fila-antiga"], environment: environment(url))
            #expect(busy.status == 75)
            #expect(busy.errorLines == ["fila: a run of limpar-fila-antiga is still going; try again when it ends"])
            try await connection.query("ROLLBACK", logger: logger)
        }
        #expect(try await int(url, "SELECT count(*) FROM job_executions") == 0)
    }

    /// Two `fila scheduler` processes: a run requested with psql is taken by one of them
    /// within seconds, and both stop cleanly on SIGTERM.
    @Test func schedulerProcessesPickUpARunRequestedWithPsql() async throws {
        let url = try TestDatabase.current.url
        let schedulers = try (0..<2).map { _ in try FilaProcess.start(["scheduler"], environment: environment(url)) }
        var registered = false
        for _ in 0..<300 where !registered {
            let definitions = try await int(url, "SELECT count(*) FROM job_definitions")
            let heartbeats = try await int(url, "SELECT count(*) FROM worker_heartbeats WHERE kind = 'scheduler'")
            registered = definitions == 13 && heartbeats == 2
            if !registered { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(registered)
        try await url.withConnection(logger: logger) { connection in
            try await connection.query("INSERT INTO job_executions (job_name) VALUES ('verificar-heartbeats')", logger: logger)
        }
        // Usually within a second or two; a loaded machine gets up to 30 s.
        var done = false
        for _ in 0..<300 where !done {
            done = try await int(url, "SELECT count(*) FROM job_executions WHERE triggered_by = 'psql' AND status = 'success'") == 1
            if !done { try await Task.sleep(for: .milliseconds(100)) }
        }
        if !done {
            let rows = try await url.withConnection(logger: logger) { connection in
                try await connection.query("SELECT job_name || ' ' || status || ' ' || triggered_by || ' ' || coalesce(error, '') FROM job_executions ORDER BY created_at", logger: logger).collect().map { try $0.decode(String.self) }
            }
            Issue.record("no psql-requested run succeeded; executions: \(rows); schedulers said: \(schedulers.map { $0.standardErrorSoFar })")
        }
        #expect(done)
        for scheduler in schedulers { scheduler.signal(SIGTERM) }
        for scheduler in schedulers {
            let output = await scheduler.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
        }
        #expect(try await int(url, "SELECT count(*) FROM worker_heartbeats WHERE kind = 'scheduler' AND status = 'stopped'") == 2)
    }

    /// A run asked for with psql for a job that job_definitions lists (an older fila declared
    /// it) but the running `fila scheduler` does not know: failed with the reason once it has
    /// waited 2 minutes while the scheduler was up. (Time as a parameter: the request and the
    /// scheduler's start are dated back, nobody sleeps for minutes.)
    @Test(.timeLimit(.minutes(3))) func aRequestForAJobNoRunningSchedulerKnowsFails() async throws {
        let url = try TestDatabase.current.url
        try await url.withConnection(logger: logger) { connection in
            _ = try await connection.query(
                """
                INSERT INTO job_definitions (name, schedule, time_zone, sla_seconds, late_after_seconds, timeout_seconds)
                VALUES ('relatorio-antigo', 'every 1d', 'UTC', 60, 172800, 60)
                """,
                logger: logger
            ).collect()
        }
        let scheduler = try FilaProcess.start(["scheduler"], environment: environment(url))
        var started = false
        for _ in 0..<300 where !started {
            started = try await int(url, "SELECT count(*) FROM worker_heartbeats WHERE kind = 'scheduler'") == 1
            if !started { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(started)
        try await url.withConnection(logger: logger) { connection in
            _ = try await connection.query(
                """
                UPDATE worker_heartbeats SET started_at = now() - interval '5 minutes' WHERE kind = 'scheduler';
                """,
                logger: logger
            ).collect()
            _ = try await connection.query(
                "INSERT INTO job_executions (job_name, created_at) VALUES ('relatorio-antigo', now() - interval '3 minutes')",
                logger: logger
            ).collect()
        }
        var failed = false
        for _ in 0..<300 where !failed {
            failed = try await int(url, "SELECT count(*) FROM job_executions WHERE job_name = 'relatorio-antigo' AND status = 'failed'") == 1
            if !failed { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(failed, "\(scheduler.standardErrorSoFar)")
        let error = try await url.withConnection(logger: logger) { connection in
            try await connection.query("SELECT error FROM job_executions WHERE job_name = 'relatorio-antigo'", logger: logger)
                .collect().first?.decode(String?.self)
        }
        #expect(error == "no running scheduler knows job relatorio-antigo: nobody took the request in 120 s (is a fila version that has it running?)")
        scheduler.signal(SIGTERM)
        let output = await scheduler.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
    }

    private func execute(_ url: DatabaseURL, _ sql: String) async throws {
        try await url.withConnection(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        }
    }

    /// Text written into job_executions with psql reaches the terminal escaped and cut
    /// short: an ESC sequence cannot recolour or move the operator's terminal.
    @Test func historyEscapesControlCharactersAndCutsLongValues() async throws {
        let url = try TestDatabase.current.url
        let first = try await FilaProcess.run(["job", "run", "verificar-heartbeats"], environment: environment(url))
        #expect(first.status == 0, "\(first.standardError)")
        try await execute(
            url,
            """
            INSERT INTO job_executions (job_name, scheduled_for, status, finished_at, triggered_by, error)
            VALUES ('verificar-heartbeats', now() + interval '1 minute', 'failed', now(), 'psql',
                    E'\\x1b[31mvermelho\\x1b[0m\\x07 ' || repeat('longo ', 100))
            """
        )
        let history = try await FilaProcess.run(["job", "history", "verificar-heartbeats"], environment: environment(url))
        #expect(history.status == 0, "\(history.standardError)")
        #expect(!history.standardOutput.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        let lines = history.standardOutput.split(separator: "\n")
        #expect(lines.count == 3)
        let newest = String(lines.dropFirst().first ?? "")
        #expect(newest.contains(#"\u{1B}[31mvermelho\u{1B}[0m\u{7} longo longo"#), "\(newest)")
        #expect(newest.hasSuffix("…"))
        #expect(newest.count < 300)
    }

    /// A job_executions row that a trigger added with psql swallows (an insert that returns
    /// no row, a row deleted as it finishes) makes `fila job run` fail with one clear line,
    /// not crash.
    @Test func aRunWhoseRowDisappearsFailsCleanly() async throws {
        let url = try TestDatabase.current.url
        try await execute(
            url,
            """
            CREATE FUNCTION drop_finished() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.finished_at IS NOT NULL THEN DELETE FROM job_executions WHERE id = NEW.id; END IF;
                RETURN NULL;
            END $$
            """
        )
        try await execute(url, "CREATE TRIGGER drop_finished AFTER UPDATE ON job_executions FOR EACH ROW EXECUTE FUNCTION drop_finished()")
        let dropped = try await FilaProcess.run(["job", "run", "verificar-heartbeats"], environment: environment(url))
        #expect(dropped.status == 1, "\(dropped.standardError)")
        // The job's own warnings aside, one line says what went wrong.
        let failure = dropped.errorLines.filter { $0.hasPrefix("fila: ") }
        #expect(failure.count == 1, "\(dropped.standardError)")
        #expect(failure.first?.hasPrefix("fila: job execution ") == true, "\(dropped.standardError)")
        #expect(failure.first?.hasSuffix(" disappeared while running") == true, "\(dropped.standardError)")

        try await execute(
            url,
            """
            CREATE FUNCTION skip_cli() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.triggered_by = 'cli' THEN RETURN NULL; END IF;
                RETURN NEW;
            END $$
            """
        )
        try await execute(url, "CREATE TRIGGER skip_cli BEFORE INSERT ON job_executions FOR EACH ROW EXECUTE FUNCTION skip_cli()")
        let skipped = try await FilaProcess.run(["job", "run", "verificar-heartbeats"], environment: environment(url))
        #expect(skipped.status == 1, "\(skipped.standardError)")
        #expect(
            skipped.errorLines.filter { $0.hasPrefix("fila: ") }
                == ["fila: job verificar-heartbeats was not run: the database did not record its job_executions row"]
        )
    }
}
