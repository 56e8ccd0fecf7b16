import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Primitives
@testable import Queue
import Testing

/// The worker's outcome writer alone, against a real database: what it writes, when, in how
/// many statements, and when a held claim's slot frees.
@Suite("The outcome writer", .migratedDatabase)
struct OutcomeWriterTests {
    /// The advisory lock that `stallOutcomeWrites` makes every outcome write wait for.
    private static let stallLock = 4242

    private func writer(_ queue: MessageQueue, stats: ProcessStats = ProcessStats()) -> OutcomeWriter {
        OutcomeWriter(
            queue: queue, stats: stats, wake: WakeSignal(), databaseDeadline: .seconds(60),
            retryBackoff: Backoff(base: .milliseconds(20), multiplier: 1, maximum: .milliseconds(20), jitter: .none),
            logger: logger
        )
    }

    private func sent(_ message: ClaimedMessage) -> AttemptResult {
        AttemptResult(messageID: message.id, claim: message.claim, resolution: .sent(provider: "test", providerMessageID: nil, chipID: nil))
    }

    /// `count` messages claimed by `w1`, as the claim loop would hand them over.
    private func claimMessages(_ count: Int, in queue: MessageQueue) async throws -> [ClaimedMessage] {
        _ = try await queue.enqueue((0..<count).map { message($0) }, logger: logger)
        try await queue.registerWorker("w1")
        let claimed = try await queue.claim(workerID: "w1", limit: count, logger: logger)
        try #require(claimed.count == count)
        return claimed
    }

    /// Records the rows each outcome write ended, one entry per statement, in `outcome_writes`.
    private func countOutcomeWrites(_ queue: MessageQueue) async throws {
        try await queue.execute("CREATE TABLE outcome_writes (n serial PRIMARY KEY, rows int NOT NULL)")
        try await queue.execute(
            """
            CREATE FUNCTION count_outcome_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO outcome_writes (rows) SELECT count(*) FROM ended WHERE status <> 'processando';
                RETURN NULL;
            END $$
            """
        )
        try await queue.execute(
            """
            CREATE TRIGGER count_outcome_write AFTER UPDATE ON fila_mensagens
            REFERENCING NEW TABLE AS ended FOR EACH STATEMENT EXECUTE FUNCTION count_outcome_write()
            """
        )
    }

    private func outcomeWrites(_ queue: MessageQueue) async throws -> [Int] {
        try await queue.client.query("SELECT rows FROM outcome_writes ORDER BY n", logger: logger)
            .collect().map { Int(try $0.decode(Int32.self)) }
    }

    /// Makes every outcome write wait while another session holds `stallLock`.
    private func stallOutcomeWrites(_ queue: MessageQueue) async throws {
        try await queue.execute(
            """
            CREATE FUNCTION stall_outcome_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared(\(Self.stallLock)); RETURN NEW; END $$
            """
        )
        try await queue.execute(
            """
            CREATE TRIGGER stall_outcome_write BEFORE UPDATE ON fila_mensagens FOR EACH ROW
            WHEN (OLD.status = 'processando' AND NEW.status <> 'processando') EXECUTE FUNCTION stall_outcome_write()
            """
        )
    }

    /// Holds `stallLock` on a connection of its own while `body` runs.
    private func whileOutcomeWritesStall<Result: Sendable>(_ queue: MessageQueue, _ body: () async throws -> Result) async throws -> Result {
        try await queue.client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.stallLock))", logger: logger)
            do {
                let result = try await body()
                try await connection.query("SELECT pg_advisory_unlock(\(Self.stallLock))", logger: logger)
                return result
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.stallLock))", logger: logger)
                throw error
            }
        }
    }

    /// Waits until an outcome write is blocked on `stallLock`.
    private func aWriteIsStalled(_ queue: MessageQueue) async throws -> Bool {
        try await eventually(within: 30) {
            try await queue.client.query(
                """
                SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'
                """,
                logger: logger
            ).collect().first?.decode(Int.self) == 1
        }
    }

    @Test func outcomesWaitingTogetherAreWrittenInOneStatement() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(10, in: queue)
        try await countOutcomeWrites(queue)
        let stats = ProcessStats()
        let outcomes = writer(queue, stats: stats)
        outcomes.hold(claimed)
        #expect(outcomes.heldCount == 10)
        for message in claimed.prefix(8) { outcomes.submit(sent(message)) }
        outcomes.submit(AttemptResult(messageID: claimed[8].id, claim: claimed[8].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "provider:500", error: "HTTP 500", retryAfter: .seconds(300))))
        outcomes.submit(AttemptResult(messageID: claimed[9].id, claim: claimed[9].claim, resolution: .fail(outcome: .failedValidation, reasonCode: "invalid_number", error: "no such number")))
        outcomes.close()
        await outcomes.run()

        #expect(try await outcomeWrites(queue) == [10])
        #expect(try await queue.count(where: "status = 'enviada' AND outcome = 'SENT'") == 8)
        let retried = try await queue.row(claimed[8].id)
        #expect(retried.status == "pendente" && retried.tentativas == 1 && retried.reason == "provider:500" && retried.dueInSeconds > 290)
        let failed = try await queue.row(claimed[9].id)
        #expect(failed.status == "erro" && failed.outcome == "FAILED_VALIDATION")
        #expect(outcomes.heldCount == 0)
        #expect(outcomes.heldClaims.isEmpty)
        #expect(stats.processed == 10)
    }

    /// A write starts with the first outcome; the ones that finish while it runs wait for it
    /// and go together in the next. Every slot stays taken until its own write has answered.
    @Test func outcomesThatFinishDuringAWriteGoTogetherInTheNextAndKeepTheirSlotsUntilThen() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(10, in: queue)
        try await countOutcomeWrites(queue)
        try await stallOutcomeWrites(queue)
        let outcomes = writer(queue)
        outcomes.hold(claimed)
        async let running: Void = outcomes.run()

        try await whileOutcomeWritesStall(queue) { () async throws in
            outcomes.submit(sent(claimed[0]))
            #expect(try await aWriteIsStalled(queue))
            for message in claimed.dropFirst() { outcomes.submit(sent(message)) }
            // Every send has returned, nothing is written: every slot is still taken.
            try await Task.sleep(for: .milliseconds(200))
            #expect(outcomes.heldCount == 10)
            #expect(outcomes.heldClaims == Set(claimed.map(\.heldClaim)))
            #expect(try await queue.count(where: "status = 'processando'") == 10)
        }
        #expect(try await eventually(within: 30) { outcomes.heldCount == 0 })
        #expect(try await queue.count(where: "status = 'enviada'") == 10)
        #expect(try await outcomeWrites(queue) == [1, 9])
        outcomes.close()
        await running
    }

    /// A write that fails is kept and retried; its slot stays taken until it succeeds, so a
    /// database that is away stops the claiming rather than letting unrecorded sends pile up.
    @Test func aFailedWriteKeepsItsSlotAndIsRetriedUntilItSucceeds() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(1, in: queue)
        try await queue.execute("CREATE SEQUENCE refused_writes")
        try await queue.execute(
            """
            CREATE FUNCTION refuse_outcome_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM nextval('refused_writes'); RAISE EXCEPTION 'the database is away'; END $$
            """
        )
        try await queue.execute(
            """
            CREATE TRIGGER refuse_outcome_write BEFORE UPDATE ON fila_mensagens FOR EACH ROW
            WHEN (OLD.status = 'processando') EXECUTE FUNCTION refuse_outcome_write()
            """
        )
        let stats = ProcessStats()
        let outcomes = writer(queue, stats: stats)
        outcomes.hold(claimed)
        async let running: Void = outcomes.run()
        outcomes.submit(sent(claimed[0]))

        let refusedThrice = try await eventually(within: 30) {
            try await queue.client.query("SELECT last_value FROM refused_writes", logger: logger).collect().first?.decode(Int.self) ?? 0 >= 3
        }
        #expect(refusedThrice)
        #expect(outcomes.heldCount == 1)
        #expect(stats.processed == 0)
        #expect(try await queue.row(claimed[0].id).status == "processando")

        try await queue.execute("DROP TRIGGER refuse_outcome_write ON fila_mensagens")
        #expect(try await eventually(within: 30) { outcomes.heldCount == 0 })
        #expect(try await queue.row(claimed[0].id).status == "enviada")
        #expect(stats.processed == 1)
        outcomes.close()
        await running
    }

    /// The outcome of a claim that no longer holds (the row was handed back and claimed
    /// again, here by the same worker) writes nothing, frees that claim's slot only, and
    /// leaves the current claim held.
    @Test func aStaleClaimsOutcomeIsFencedAndKeepsTheCurrentClaimHeld() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let first = try await claimMessages(1, in: queue)[0]
        let stats = ProcessStats()
        let outcomes = writer(queue, stats: stats)
        outcomes.hold([first])
        // Reset by hand while the first send was running, then claimed again.
        try await queue.execute("UPDATE fila_mensagens SET status = 'pendente', worker_id = NULL, processando_desde = NULL")
        let second = try await queue.claim(workerID: "w1", limit: 1, logger: logger)[0]
        try #require(second.id == first.id && second.heldClaim != first.heldClaim)
        outcomes.hold([second])
        #expect(outcomes.heldCount == 2)
        async let running: Void = outcomes.run()

        outcomes.submit(sent(first))
        #expect(try await eventually(within: 30) { outcomes.heldCount == 1 })
        #expect(outcomes.heldClaims == [second.heldClaim])
        let untouched = try await queue.row(first.id)
        #expect(untouched.status == "processando" && untouched.outcome == nil)
        #expect(stats.processed == 0)

        outcomes.submit(AttemptResult(messageID: second.id, claim: second.claim, resolution: .deferred(outcome: .failedRateLimit, reasonCode: "rate_limit:test", until: .seconds(60))))
        #expect(try await eventually(within: 30) { outcomes.heldCount == 0 })
        let deferred = try await queue.row(second.id)
        #expect(deferred.status == "pendente" && deferred.outcome == "FAILED_RATE_LIMIT" && deferred.tentativas == 0)
        #expect(stats.processed == 1)
        outcomes.close()
        await running
    }

    /// Closing while a write is under way: `run()` returns only once that write and every
    /// outcome submitted before the close are in the database.
    @Test func closingFlushesEverythingBeforeRunReturns() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(5, in: queue)
        try await countOutcomeWrites(queue)
        try await stallOutcomeWrites(queue)
        let outcomes = writer(queue)
        outcomes.hold(claimed)
        async let running: Void = outcomes.run()
        try await whileOutcomeWritesStall(queue) { () async throws in
            outcomes.submit(sent(claimed[0]))
            #expect(try await aWriteIsStalled(queue))
            for message in claimed.dropFirst() { outcomes.submit(sent(message)) }
            outcomes.close()
        }
        await running
        // No waiting here: the rows must be written by the time `run()` returned.
        #expect(try await queue.count(where: "status = 'enviada'") == 5)
        #expect(try await outcomeWrites(queue) == [1, 4])
        #expect(outcomes.heldCount == 0)
    }

    /// Rows handed back after the writer ended (a claim that committed late, at shutdown)
    /// get one direct write: back to `pendente`, no attempt burned, their slots freed.
    @Test func aHandBackAfterTheWriterEndedIsWrittenDirectly() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(3, in: queue)
        let outcomes = writer(queue)
        outcomes.close()
        await outcomes.run()

        await outcomes.handBack(claimed, reasonCode: "claim_late:w1")
        #expect(try await queue.count(where: "status = 'pendente' AND tentativas = 0 AND outcome = 'FAILED_WORKER_LOST' AND outcome_reason_code = 'claim_late:w1' AND worker_id IS NULL") == 3)
        #expect(outcomes.heldCount == 0)
    }

    /// Shutdown out of time with the database away: a cancelled writer stops retrying and
    /// returns; the rows stay `processando` for the rescue of lost workers.
    @Test(.timeLimit(.minutes(3))) func aCancelledWriterGivesUpOnAnUnreachableDatabase() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let claimed = try await claimMessages(2, in: queue)
        try await queue.execute("CREATE SEQUENCE refused_writes")
        try await queue.execute(
            """
            CREATE FUNCTION refuse_outcome_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM nextval('refused_writes'); RAISE EXCEPTION 'the database is away'; END $$
            """
        )
        try await queue.execute(
            "CREATE TRIGGER refuse_outcome_write BEFORE UPDATE ON fila_mensagens FOR EACH ROW EXECUTE FUNCTION refuse_outcome_write()"
        )
        let outcomes = writer(queue)
        outcomes.hold(claimed)
        for message in claimed { outcomes.submit(sent(message)) }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await outcomes.run() }
            let refused = try await eventually(within: 30) {
                try await queue.client.query("SELECT last_value FROM refused_writes", logger: logger).collect().first?.decode(Int.self) ?? 0 >= 2
            }
            #expect(refused)
            group.cancelAll()
        }
        #expect(try await queue.count(where: "status = 'processando' AND worker_id = 'w1'") == 2)
    }
}
