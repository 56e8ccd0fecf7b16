import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Queue
import Testing

/// `fila worker` processes, as operators run them: several at once, killed, and across a
/// Postgres restart.
@Suite("fila worker processes", .timeLimit(.minutes(6)))
struct WorkerProcessTests {
    let logger = TestDatabase.logger

    private func environment(_ url: DatabaseURL, record: String, extra: [String: String] = [:]) -> [String: String] {
        var environment = [
            "DATABASE_URL": url.connectionString,
            "FILA_SENDER": "sandbox",
            "FILA_SANDBOX_RECORD": record,
            "LOG_LEVEL": "warning",
        ]
        environment.merge(extra) { _, new in new }
        return environment
    }

    private func recordFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("fila-sent-\(UUID().uuidString).txt").path
    }

    private func recordedIDs(_ path: String) -> [String] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init)
    }

    private func count(_ client: PostgresClient, where condition: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM fila_mensagens WHERE \(condition)"), logger: logger)
            .collect().first!.decode(Int.self)
    }

    private func waitUntil(seconds: Double = 120, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }

    /// A process that has been heart-beating without a gap for an hour (a scheduler, say):
    /// the evidence a rescue needs that the database was reachable all along.
    private func addWitness(_ client: PostgresClient) async throws {
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, beating_since)
            VALUES ('witness', 'scheduler', 'test', 1, 'test', now() - interval '1 hour')
            """,
            logger: logger
        )
    }

    private func enqueue(_ count: Int, client: PostgresClient) async throws -> Set<String> {
        let messages = (0..<count).map { index in
            NewMessage(clienteID: "medico-\(index % 700)", telefone: String(format: "55219%08d", index), conteudo: "campanha \(index)", tipo: .campanha)
        }
        let results = try await MessageQueue(client: client).enqueue(messages, logger: logger)
        return Set(results.map { $0.id.uuidString.lowercased() })
    }

    @Test(.migratedDatabase) func threeWorkersSendTenThousandMessagesExactlyOnce() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let ids = try await enqueue(10_000, client: client)
        let record = recordFile()
        defer { try? FileManager.default.removeItem(atPath: record) }
        let workers = try (0..<3).map { _ in
            try FilaProcess.start(["worker", "--concurrency", "40", "--batch", "50"], environment: environment(url, record: record))
        }
        let drained = try await waitUntil { try await count(client, where: "status = 'enviada'") == 10_000 }
        for worker in workers { worker.signal(SIGTERM) }
        var outputs: [FilaProcess.Output] = []
        for worker in workers { outputs.append(await worker.waitForExit()) }

        #expect(drained)
        #expect(outputs.map(\.status) == [0, 0, 0], "\(outputs.map(\.standardError))")
        let sent = recordedIDs(record)
        #expect(sent.count == 10_000)
        #expect(Set(sent) == ids)
        #expect(try await count(client, where: "status <> 'enviada'") == 0)
        // All three took part.
        let busy = try await client.query("SELECT count(DISTINCT worker_id) FROM fila_mensagens", logger: logger).collect().first!.decode(Int.self)
        #expect(busy == 3)
    }

    /// SIGKILL gives the worker no chance to clean up: its rows stay `processando` until the
    /// rescue finds its heartbeat stale, and are then delivered by another worker.
    @Test(.migratedDatabase) func aKilledWorkersRowsAreRescuedAndDelivered() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        // Far more than the doomed worker can send before it is killed, however slowly
        // the test itself gets scheduled on a loaded machine.
        let total = 3_000
        let ids = try await enqueue(total, client: client)
        let record = recordFile()
        defer { try? FileManager.default.removeItem(atPath: record) }
        let doomed = try FilaProcess.start(
            ["worker", "--concurrency", "30", "--batch", "30"],
            environment: environment(url, record: record, extra: ["FILA_SANDBOX_DELAY_MS": "400"])
        )
        let midBatch = try await waitUntil(seconds: 60) {
            let sent = try await count(client, where: "status = 'enviada'")
            let held = try await count(client, where: "status = 'processando'")
            return sent > 0 && held > 0
        }
        #expect(midBatch)
        // Killed at a moment it holds rows (it may be between a write and its next claim).
        for _ in 0..<300 {
            doomed.signal(SIGSTOP)
            if try await count(client, where: "status = 'processando'") > 0 { break }
            doomed.signal(SIGCONT)
            try await Task.sleep(for: .milliseconds(50))
        }
        doomed.signal(SIGKILL)
        let killed = await doomed.waitForExit()
        #expect(killed.status != 0)
        let stranded = try await count(client, where: "status = 'processando'")
        #expect(stranded > 0)

        // Time is a parameter: age the dead worker's heartbeat instead of waiting 2 minutes.
        try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() - interval '3 minutes'", logger: logger)
        try await addWitness(client)
        let rescued = try await MessageQueue(client: client).rescueLostWorkers(logger: logger)
        #expect(rescued.rescued == stranded)

        let survivor = try FilaProcess.start(["worker"], environment: environment(url, record: record))
        let drained = try await waitUntil { try await count(client, where: "status = 'enviada'") == total }
        survivor.signal(SIGTERM)
        let output = await survivor.waitForExit()
        #expect(drained)
        #expect(output.status == 0, "\(output.standardError)")
        // Nothing lost; a message whose send finished just as the worker died may go twice.
        #expect(Set(recordedIDs(record)) == ids)
        #expect(try await count(client, where: "outcome_reason_code LIKE 'worker_lost:%' OR status <> 'enviada'") == 0)
        let redelivered = try await count(client, where: "tentativas = 0 AND status = 'enviada'")
        #expect(redelivered == total)
    }

    /// The duplicate window after a crash: a killed worker has sent at most `--concurrency`
    /// messages whose outcomes it did not write, however far its outcome writes lag (here
    /// each costs 20 ms a row, while a send costs 2 ms), so a rescue sends at most that many
    /// twice.
    @Test(.migratedDatabase, .timeLimit(.minutes(4))) func workersKilledMidDrainLeaveAtMostTheirConcurrencySentAndUnwritten() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let ids = try await enqueue(1_500, client: client)
        try await client.query(
            """
            CREATE FUNCTION slow_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$
            """,
            logger: logger
        )
        try await client.query(
            """
            CREATE TRIGGER slow_outcome BEFORE UPDATE ON fila_mensagens FOR EACH ROW
            WHEN (OLD.status = 'processando' AND NEW.status = 'enviada') EXECUTE FUNCTION slow_outcome()
            """,
            logger: logger
        )
        let concurrency = 16
        var records: [String] = []
        defer { for record in records { try? FileManager.default.removeItem(atPath: record) } }
        var unwrittenPerKill: [Int] = []
        for _ in 0..<3 {
            let record = recordFile()
            records.append(record)
            let worker = try FilaProcess.start(
                ["worker", "--concurrency", "\(concurrency)", "--batch", "\(concurrency)"],
                environment: environment(url, record: record, extra: ["FILA_SANDBOX_DELAY_MS": "2"])
            )
            let busy = try await waitUntil(seconds: 60) { recordedIDs(record).count >= 80 }
            #expect(busy)
            worker.signal(SIGKILL)
            _ = await worker.waitForExit()
            // Sent (recorded) and still `processando`: what a rescue will send again.
            let sent = recordedIDs(record).compactMap(UUID.init(uuidString:))
            let unwritten = try await client.query(
                "SELECT count(*) FROM fila_mensagens WHERE status = 'processando' AND id = ANY(\(sent))",
                logger: logger
            ).collect().first!.decode(Int.self)
            unwrittenPerKill.append(unwritten)
        }
        #expect(unwrittenPerKill.allSatisfy { $0 <= concurrency }, "sent but unwritten at each kill: \(unwrittenPerKill)")

        try await client.query("DROP TRIGGER slow_outcome ON fila_mensagens", logger: logger)
        try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() - interval '3 minutes'", logger: logger)
        try await addWitness(client)
        _ = try await MessageQueue(client: client).rescueLostWorkers(logger: logger)
        let record = recordFile()
        records.append(record)
        let survivor = try FilaProcess.start(["worker"], environment: environment(url, record: record))
        let drained = try await waitUntil { try await count(client, where: "status = 'enviada'") == 1_500 }
        survivor.signal(SIGTERM)
        let output = await survivor.waitForExit()
        #expect(drained)
        #expect(output.status == 0, "\(output.standardError)")

        let sent = records.flatMap(recordedIDs)
        #expect(Set(sent) == ids)
        let duplicates = sent.count - Set(sent).count
        #expect(duplicates <= unwrittenPerKill.reduce(0, +), "sent twice: \(duplicates); unwritten at the kills: \(unwrittenPerKill)")
    }

    /// Postgres away for longer than the heartbeat timeout: when it is back, every heartbeat
    /// is stale, and a rescue run before the workers beat again must not take their rows
    /// (they hold messages already sent). Time is a parameter: the heartbeats are aged.
    @Test(.timeLimit(.minutes(4))) func aRescueRightAfterALongOutageTakesNothingFromALiveWorker() async throws {
        try await withBusyWorker(environment: [:]) { cluster, worker, ids, record in
            let url = cluster.url
            try await cluster.stopServer()
            // Sends finish while the database is away; their outcomes wait in memory.
            try await Task.sleep(for: .milliseconds(500))
            try await cluster.startServer()
            // The rescue runs before the worker beats again: hold the worker still meanwhile,
            // at a moment it holds rows (it may be between a write and its next claim).
            let held = try await TestDatabase.withClient(url) { client throws in
                var held = 0
                for _ in 0..<300 where held == 0 {
                    worker.signal(SIGSTOP)
                    held = try await count(client, where: "status = 'processando'")
                    if held == 0 {
                        worker.signal(SIGCONT)
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() - interval '130 seconds'", logger: logger)
                return held
            }
            let run = try await FilaProcess.run(["job", "run", "resgatar-workers-perdidos"], environment: environment(url, record: record))
            worker.signal(SIGCONT)
            #expect(held > 0)
            #expect(run.status == 0, "\(run.standardError)")
            #expect(run.standardOutput.contains(#"{"judged":false,"rescued":0}"#), "\(run.standardOutput)")

            let drained = try await TestDatabase.withClient(url) { client throws in
                try await waitUntil(seconds: 180) { try await count(client, where: "status = 'enviada'") == 2_000 }
            }
            #expect(drained)
            worker.signal(SIGTERM)
            let output = await worker.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
            let sent = recordedIDs(record)
            #expect(Set(sent) == ids)
            #expect(sent.count == ids.count, "sent twice: \(sent.count - Set(sent).count)")
        }
    }

    /// The worker outlives a Postgres restart: it reconnects and drains the queue.
    /// On a cluster of the test's own (it is about to be restarted or stopped): 2,000
    /// messages and a `fila worker` 100 sends into them (20 ms each, 20 at a time).
    private func withBusyWorker(
        environment extra: [String: String],
        _ body: (TestCluster, RunningFila, _ ids: Set<String>, _ record: String) async throws -> Void
    ) async throws {
        // Not `.migratedDatabase`: the tests stop and restart this server, so it is one of their own.
        try await TestCluster.with { cluster throws in
            let url = cluster.url
            try await url.withConnection(logger: logger) { connection in
                _ = try await Migrator().migrate(on: connection, logger: logger)
            }
            let record = recordFile()
            defer { try? FileManager.default.removeItem(atPath: record) }
            let ids = try await TestDatabase.withClient(url) { client throws in try await enqueue(2_000, client: client) }
            let worker = try FilaProcess.start(
                ["worker", "--concurrency", "20", "--batch", "20"],
                environment: environment(url, record: record, extra: ["FILA_SANDBOX_DELAY_MS": "20"].merging(extra) { _, new in new })
            )
            let started = try await waitUntil(seconds: 60) { recordedIDs(record).count > 100 }
            #expect(started)
            try await body(cluster, worker, ids, record)
        }
    }

    @Test func aWorkerSurvivesAPostgresRestart() async throws {
        // Info logs: if it ever fails to recover, the output says where it stopped.
        try await withBusyWorker(environment: ["LOG_LEVEL": "info"]) { cluster, worker, ids, record in
            let url = cluster.url
            try await cluster.restart()

            let (drained, state) = try await TestDatabase.withClient(url) { client throws in
                let drained = try await waitUntil(seconds: 180) { try await count(client, where: "status = 'enviada'") == 2_000 }
                let state = try await client.query("SELECT status || ' ' || reason || ' ' || count(*)::text FROM (SELECT status, coalesce(split_part(outcome_reason_code, ':', 1), '-') AS reason FROM fila_mensagens) r GROUP BY status, reason UNION ALL SELECT 'heartbeat in_flight ' || in_flight || ' processed ' || processed_total || ' seen ' || (now() - last_seen_at)::text FROM worker_heartbeats", logger: logger)
                    .collect().map { try $0.decode(String.self) }
                return (drained, state)
            }
            #expect(drained, "rows: \(state); worker output: \(worker.standardErrorSoFar)")
            worker.signal(SIGTERM)
            let output = await worker.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
            #expect(Set(recordedIDs(record)) == ids)
            // It did see the outage (and carried on).
            #expect(output.standardError.contains("LISTEN connection lost"), "\(output.standardError)")
        }
    }

    /// SIGTERM while Postgres is down: the worker gives up on what it cannot write within
    /// the shutdown timeout and exits; its rows wait for the rescue. It must not hang or crash.
    @Test func aWorkerStopsOnSIGTERMEvenWithPostgresDown() async throws {
        try await withBusyWorker(environment: ["SHUTDOWN_TIMEOUT": "2"]) { cluster, worker, _, _ in
            let url = cluster.url
            try await cluster.stopServer()
            try await Task.sleep(for: .milliseconds(300))
            worker.signal(SIGTERM)
            let output = await worker.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
            #expect(output.standardError.contains("shutting down with outcomes unwritten") || !output.standardError.contains("writing outcomes failed"))

            // Back up: whatever it held is rescued (its heartbeat is stale) and nothing is lost.
            try await cluster.startServer()
            try await TestDatabase.withClient(url) { client throws in
                try await client.query("UPDATE worker_heartbeats SET last_seen_at = now() - interval '3 minutes'", logger: logger)
                try await addWitness(client)
                _ = try await MessageQueue(client: client).rescueLostWorkers(logger: logger)
                #expect(try await count(client, where: "status = 'processando'") == 0)
                #expect(try await count(client, where: "status = 'pendente' OR status = 'enviada'") == 2_000)
            }
        }
    }

    /// `ops.pause_sending` stops two running workers from claiming within seconds (their
    /// heartbeats say who paused and why); `ops.resume_sending` starts them again, and every
    /// message is sent once.
    @Test(.migratedDatabase) func pausedSendingStopsEveryWorkerUntilResumed() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let record = recordFile()
        defer { try? FileManager.default.removeItem(atPath: record) }
        let workers = try (0..<2).map { _ in
            try FilaProcess.start(["worker", "--poll-interval-ms", "200"], environment: environment(url, record: record))
        }
        #expect(try await waitUntil(seconds: 60) {
            try await client.query("SELECT count(*) FROM worker_heartbeats WHERE kind = 'worker' AND status = 'running'", logger: logger)
                .collect().first!.decode(Int.self) == 2
        })
        _ = try await client.query("SELECT ops.pause_sending('wrong template in campanha-7')", logger: logger).collect()
        #expect(try await waitUntil(seconds: 60) {
            try await client.query(
                "SELECT count(*) FROM worker_heartbeats WHERE kind = 'worker' AND metadata->>'paused' LIKE '%wrong template in campanha-7%'",
                logger: logger
            ).collect().first!.decode(Int.self) == 2
        })
        let ids = try await enqueue(20, client: client)
        // Paused: nothing is claimed, though the inserts woke both workers.
        try await Task.sleep(for: .seconds(2))
        #expect(try await count(client, where: "status <> 'pendente'") == 0)
        #expect(recordedIDs(record).isEmpty)

        _ = try await client.query("SELECT ops.resume_sending('template fixed')", logger: logger).collect()
        #expect(try await waitUntil(seconds: 60) { try await count(client, where: "status = 'enviada'") == 20 })
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers {
            let output = await worker.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
        }
        let sent = recordedIDs(record)
        #expect(sent.count == 20 && Set(sent) == ids)
    }

    @Test func aWorkerWithoutASenderRefusesToStart() async throws {
        let output = try await FilaProcess.run(["worker"], environment: ["DATABASE_URL": "postgres://u@127.0.0.1:1/db"])
        #expect(output.status == 78)
        #expect(output.errorLines == ["fila: FILA_SENDER is not set: choose where messages go with --sender or FILA_SENDER (available: whatsapp, sandbox)"])

        let unknown = try await FilaProcess.run(["worker", "--sender", "carrier-pigeon"], environment: ["DATABASE_URL": "postgres://u@127.0.0.1:1/db"])
        #expect(unknown.status == 78)
        #expect(unknown.errorLines == ["fila: FILA_SENDER is 'carrier-pigeon'; available: whatsapp, sandbox"])
    }
}
