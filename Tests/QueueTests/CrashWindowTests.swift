import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
@testable import Queue
import Testing

/// What a crash or an outage may cost: nothing sent twice outside the stated window.
@Suite("The duplicate window")
struct CrashWindowTests {
    private func process(_ id: String, kind: ProcessIdentity.Kind, client: PostgresClient) -> HeartbeatService {
        HeartbeatService(
            client: client,
            identity: ProcessIdentity(id: id, kind: kind, host: "test", pid: 1, version: "test"),
            stats: ProcessStats(),
            logger: logger
        )
    }

    /// After an outage longer than the heartbeat timeout every heartbeat is stale at once;
    /// the workers are alive and hold messages they already sent. Time is a parameter: the
    /// rows are aged as the outage would have left them.
    @Test(.migratedDatabase) func aRescueRightAfterAnOutageTakesNothingFromLiveWorkers() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        _ = try await queue.enqueue((0..<3).map { message($0) }, logger: logger)
        let worker = process("worker-1", kind: .worker, client: queue.client)
        let scheduler = process("scheduler-1", kind: .scheduler, client: queue.client)
        try await worker.beat()
        try await scheduler.beat()
        #expect(try await queue.claim(workerID: "worker-1", limit: 3, logger: logger).count == 3)
        // Both had been running for an hour when the database went away for 130 s.
        try await queue.execute(
            "UPDATE worker_heartbeats SET beating_since = now() - interval '1 hour 130 seconds', last_seen_at = now() - interval '130 seconds'"
        )

        // Back: the scheduler beats first (its run of beats starts over) and rescues at once.
        try await scheduler.beat()
        #expect(try await queue.count(where: "true") == 3)
        let restarted = try await queue.client.query(
            "SELECT beating_since > now() - interval '5 seconds' FROM worker_heartbeats WHERE id = 'scheduler-1'", logger: logger
        ).collect().first?.decode(Bool.self)
        #expect(restarted == true)
        let early = try await queue.rescueLostWorkers(logger: logger)
        #expect(early == LostWorkerRescue(rescued: 0, judged: false))
        #expect(try await queue.count(where: "status = 'processando' AND worker_id = 'worker-1'") == 3)

        // The worker beats again; two minutes on (aged, not waited for) the scheduler can
        // vouch for the database, and the live worker keeps its rows.
        try await worker.beat()
        try await queue.execute("UPDATE worker_heartbeats SET beating_since = beating_since - interval '121 seconds'")
        try await scheduler.beat()
        try await worker.beat()
        let unbroken = try await queue.client.query(
            "SELECT count(*) FROM worker_heartbeats WHERE beating_since < now() - interval '120 seconds'", logger: logger
        ).collect().first?.decode(Int.self)
        #expect(unbroken == 2, "beats without a gap keep their run")
        #expect(try await queue.rescueLostWorkers(logger: logger) == LostWorkerRescue(rescued: 0, judged: true))

        // A worker that really went silent is rescued then.
        try await queue.execute("UPDATE worker_heartbeats SET last_seen_at = now() - interval '121 seconds' WHERE id = 'worker-1'")
        #expect(try await queue.rescueLostWorkers(logger: logger) == LostWorkerRescue(rescued: 3, judged: true))
    }

    /// A row deferred and claimed again is another claim: knowing the first is not knowing
    /// the second.
    @Test(.migratedDatabase) func unconfirmedClaimsAreKnownByRowAndClaim() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let id = try await queue.enqueue(message(1), logger: logger).id
        try await queue.registerWorker("w1")
        let first = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        let report = try await queue.finish(
            [AttemptResult(messageID: id, claim: first.claim, resolution: .deferred(outcome: .failedRateLimit, reasonCode: "rate_limit:test", until: .zero))],
            logger: logger
        )
        #expect(report.written == [id])
        let second = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        #expect(second.id == id)
        #expect(second.heldClaim != first.heldClaim)

        #expect(try await queue.releaseUnconfirmedClaims(workerID: "w1", known: [second.heldClaim], logger: logger) == 0)
        #expect(try await queue.row(id).status == "processando")
        #expect(try await queue.releaseUnconfirmedClaims(workerID: "w1", known: [first.heldClaim], logger: logger) == 1)
        #expect(try await queue.row(id).reason == "claim_unconfirmed:w1")
    }

    /// The late, fenced write of a row's first claim must not release the claim in flight.
    @Test func aLateWriteOfAnEarlierClaimKeepsTheCurrentOneHeld() {
        let id = UUID()
        let first = HeldClaim(id: id, claimedAtMicroseconds: 1_000)
        let second = HeldClaim(id: id, claimedAtMicroseconds: 2_000)
        let held = HeldRows()
        #expect(held.insert([first]) == 1)
        #expect(held.remove([first]) == 1)
        #expect(held.insert([second]) == 1)
        #expect(held.remove([first]) == 0)
        #expect(held.snapshot() == [second])
        #expect(held.insert([second]) == 0, "a claim is held once")
    }

    /// A claim stuck behind a lock past the worker's deadline commits later: its rows must go
    /// back to the queue at once, not sit `processando` under a live worker for an hour.
    @Test(.migratedDatabase, .timeLimit(.minutes(3))) func aClaimThatCommitsAfterItsDeadlineIsHandedBack() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        let ids = try await queue.enqueue((0..<5).map { message($0) }, logger: logger).map(\.id)
        // The first claim of each row takes 4 s (an I/O stall), well past the 1 s deadline; an
        // ordinary claim, even on a machine loaded by the whole suite, stays well within it.
        try await queue.execute(
            """
            CREATE FUNCTION stall_claim() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$
            """
        )
        try await queue.execute(
            """
            CREATE TRIGGER stall_claim BEFORE UPDATE ON fila_mensagens FOR EACH ROW
            WHEN (OLD.status = 'pendente' AND NEW.status = 'processando' AND OLD.outcome IS NULL)
            EXECUTE FUNCTION stall_claim()
            """
        )
        let sender = CountingSender(delay: .zero)
        let worker = RunningWorker.start(
            url: url,
            client: client,
            sender: sender,
            configuration: .init(concurrency: 5, batchSize: 1, databaseDeadline: .seconds(1))
        )
        // Only a row's first claim stalls: a row handed back carries an outcome.
        let sent = try await eventually(within: 120) { try await queue.count(where: "status = 'enviada'") == 5 }
        try await worker.stop()
        let stranded = try await queue.count(where: "status = 'processando'")
        #expect(sent, "rows still processando: \(stranded)")
        #expect(sender.started == 5)
        #expect(try await queue.count(where: "tentativas = 0") == ids.count)
    }
}
