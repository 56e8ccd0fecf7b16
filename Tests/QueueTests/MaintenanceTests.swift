import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

/// Rescue and expiry, evaluated against rows with past timestamps and the database's now().
@Suite("Rescue, stuck reset and expiry", .migratedDatabase)
struct MaintenanceTests {
    @Test func rowsOfALostWorkerComeBackWithoutBurningAnAttempt() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let ids = try await queue.enqueue((0..<4).map { message($0) }, logger: logger).map(\.id)
        try await queue.registerWorker("alive")
        try await queue.registerWorker("dead", lastSeenSecondsAgo: 121)
        let alive = try await queue.claim(workerID: "alive", limit: 1, logger: logger)[0].id
        let dead = try await queue.claim(workerID: "dead", limit: 1, logger: logger)[0].id
        _ = try await queue.claim(workerID: "never-registered", limit: 1, logger: logger)
        // A worker that said it stopped holds nothing any more, however recent its row.
        try await queue.registerWorker("stopped")
        try await queue.execute("UPDATE worker_heartbeats SET status = 'stopped' WHERE id = 'stopped'")
        _ = try await queue.claim(workerID: "stopped", limit: 1, logger: logger)
        #expect(try await queue.count(where: "status = 'processando'") == ids.count)

        // "alive" beats now, as a live worker does every 5 s: a witness's last beat must be
        // under 15 s old, and a loaded machine may take longer than that over the set-up.
        try await queue.registerWorker("alive")
        #expect(try await queue.rescueLostWorkers(logger: logger).rescued == 3)
        let aliveRow = try await queue.row(alive)
        #expect(aliveRow.status == "processando" && aliveRow.workerID == "alive")
        #expect(try await queue.row(dead).reason == "worker_lost:dead")
        for id in ids where id != alive {
            let row = try await queue.row(id)
            #expect(row.status == "pendente")
            #expect(row.tentativas == 0)
            #expect(row.outcome == "FAILED_WORKER_LOST")
            #expect(row.workerID == nil)
            #expect(row.dueInSeconds <= 0)
        }
        // Nothing left to rescue.
        #expect(try await queue.rescueLostWorkers(logger: logger).rescued == 0)
    }

    @Test func anAttemptRunningOverAnHourIsResetWithAnAttemptBurned() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        var lastChance = message(2)
        lastChance.maxTentativas = 1
        let ids = try await queue.enqueue([message(1), lastChance, message(3)], logger: logger).map(\.id)
        try await queue.registerWorker("slow")
        _ = try await queue.claim(workerID: "slow", limit: 3, logger: logger)
        try await queue.execute("UPDATE fila_mensagens SET processando_desde = now() - interval '61 minutes' WHERE id IN ('\(ids[0])', '\(ids[1])')")
        try await queue.execute("UPDATE fila_mensagens SET processando_desde = now() - interval '59 minutes' WHERE id = '\(ids[2])'")

        #expect(try await queue.resetStuck(timeout: .seconds(3600), logger: logger) == 2)
        let reset = try await queue.row(ids[0])
        #expect(reset.status == "pendente")
        #expect(reset.tentativas == 1)
        #expect(reset.outcome == "FAILED_STUCK")
        #expect(reset.reason == "stuck:slow")
        #expect(reset.workerID == nil)
        let exhausted = try await queue.row(ids[1])
        #expect(exhausted.status == "erro")
        #expect(exhausted.tentativas == 1)
        let young = try await queue.row(ids[2])
        #expect(young.status == "processando")
    }

    @Test func pendingRowsOlderThanADayAreCancelledAsExpired() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let ids = try await queue.enqueue((1...6).map { message($0) }, logger: logger).map(\.id)
        try await queue.execute("UPDATE fila_mensagens SET created_at = now() - interval '25 hours', updated_at = now() - interval '25 hours', agendar_para = now() - interval '25 hours'")
        // Booked days ago for an hour ago: due an hour, not a day.
        try await queue.execute("UPDATE fila_mensagens SET agendar_para = now() - interval '1 hour' WHERE id = '\(ids[3])'")
        try await queue.execute("UPDATE fila_mensagens SET created_at = now() - interval '23 hours', updated_at = now() - interval '23 hours' WHERE id = '\(ids[1])'")
        try await queue.execute("UPDATE fila_mensagens SET status = 'erro', outcome = 'FAILED_PROVIDER' WHERE id = '\(ids[4])'")
        _ = try await queue.client.query("SELECT ops.requeue(\(ids[4]), 'provider back')", logger: logger).collect()
        try await queue.execute("UPDATE fila_mensagens SET outcome = 'FAILED_RATE_LIMIT', updated_at = now() - interval '2 hours' WHERE id = '\(ids[5])'")
        // An old row already being processed is not expired under its worker.
        try await queue.registerWorker("w1")
        try await queue.execute("UPDATE fila_mensagens SET status = 'processando', processando_desde = now(), worker_id = 'w1' WHERE id = '\(ids[2])'")

        #expect(try await queue.expireOld(maximumAge: .seconds(86_400), logger: logger) == 1)
        let expired = try await queue.row(ids[0])
        #expect(expired.status == "cancelada")
        #expect(expired.outcome == "FAILED_EXPIRED")
        #expect(try await queue.row(ids[1]).status == "pendente")
        #expect(try await queue.row(ids[2]).status == "processando")
        #expect(try await queue.row(ids[3]).status == "pendente")
        // Requeued by an operator an hour ago, and deferred by a worker to now: each gets its day.
        #expect(try await queue.row(ids[4]).status == "pendente")
        #expect(try await queue.row(ids[5]).status == "pendente")
    }

    /// A claim that committed while its answer was lost: the live worker hands back what it
    /// never received, and keeps what it did.
    @Test func aWorkerReleasesClaimsItNeverReceived() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let ids = try await queue.enqueue((0..<4).map { message($0) }, logger: logger).map(\.id)
        try await queue.registerWorker("w1")
        try await queue.registerWorker("w2")
        _ = try await queue.claim(workerID: "w1", limit: 3, logger: logger)
        _ = try await queue.claim(workerID: "w2", limit: 1, logger: logger)
        let heldByW1 = try await queue.heldClaims(of: "w1")
        #expect(heldByW1.count == 3)
        let released = try await queue.releaseUnconfirmedClaims(workerID: "w1", known: [heldByW1[0]], logger: logger)
        #expect(released == 2)
        #expect(try await queue.row(heldByW1[0].id).status == "processando")
        let back = try await queue.row(heldByW1[1].id)
        #expect(back.status == "pendente")
        #expect(back.tentativas == 0)
        #expect(back.outcome == "FAILED_WORKER_LOST")
        #expect(back.reason == "claim_unconfirmed:w1")
        // Another worker's rows are not touched.
        #expect(try await queue.count(where: "worker_id = 'w2' AND status = 'processando'") == 1)
        #expect(ids.count == 4)
    }

    @Test func metricsCountWhatTheRowsSay() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let ids = try await queue.enqueue((0..<7).map { message($0) }, logger: logger).map(\.id)
        try await queue.registerWorker("w1")
        let claimed = try await queue.claim(workerID: "w1", limit: 5, logger: logger)
        _ = try await queue.finish(
            [
                AttemptResult(messageID: claimed[0].id, claim: claimed[0].claim, resolution: .sent(provider: nil, providerMessageID: nil, chipID: nil)),
                AttemptResult(messageID: claimed[1].id, claim: claimed[1].claim, resolution: .sent(provider: nil, providerMessageID: nil, chipID: nil)),
                AttemptResult(messageID: claimed[2].id, claim: claimed[2].claim, resolution: .retry(outcome: .failedProvider, reasonCode: "x", error: "x", retryAfter: .seconds(600))),
                // A deferral is not an error.
                AttemptResult(messageID: claimed[3].id, claim: claimed[3].claim, resolution: .deferred(outcome: .failedRateLimit, reasonCode: "rate_limit:medico-3", until: .seconds(3600))),
            ],
            logger: logger
        )
        // One sent row took 1.5 s from claim to send; one pending row has been due for 42 minutes.
        try await queue.execute("UPDATE fila_mensagens SET processando_desde = outcome_at - interval '1500 milliseconds' WHERE id = '\(claimed[0].id)'")
        try await queue.execute("UPDATE fila_mensagens SET processando_desde = outcome_at - interval '500 milliseconds' WHERE id = '\(claimed[1].id)'")
        let waiting = ids.first { id in !claimed.contains { $0.id == id } }!
        try await queue.execute("UPDATE fila_mensagens SET agendar_para = now() - interval '42 minutes 30 seconds' WHERE id = '\(waiting)'")

        let metrics = try await queue.metrics(logger: logger)
        #expect(metrics.pendentes == 4)  // two never claimed, one retry, one deferral
        #expect(metrics.processando == 1)
        #expect(metrics.enviadasUltimaHora == 2)
        #expect(metrics.errosUltimaHora == 1)
        #expect(metrics.tempoMedioProcessamentoMs == 1000)
        #expect(metrics.mensagemMaisAntigaMinutos == 42)
    }

    @Test func metricsOfAnEmptyQueue() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let metrics = try await queue.metrics(logger: logger)
        #expect(metrics == QueueMetrics(pendentes: 0, processando: 0, enviadasUltimaHora: 0, errosUltimaHora: 0, tempoMedioProcessamentoMs: nil, mensagemMaisAntigaMinutos: 0))
    }
}
