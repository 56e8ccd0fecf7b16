import Database
import FilaTestSupport
import Foundation
import PostgresNIO
@testable import Queue
import Testing

/// The claim, and the metric that reads due rows, with many rows scheduled for later: what
/// they return, and (from their plans) that they do not read the rows not yet due.
@Suite("The claim with many rows scheduled for later", .migratedDatabase, .timeLimit(.minutes(2)))
struct ClaimAtScaleTests {
    /// Rows due in 10 hours, as rate-limit deferrals and booked campaigns leave them.
    static let futureRows = 50_000

    /// The queue on the test's database, filled with `futureRows` pending rows due in 10
    /// hours, spread over priorities above, at and below those of the due rows the tests add,
    /// with statistics (as autovacuum would have gathered them).
    private func queueWithFutureRows() async throws -> MessageQueue {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        try await queue.execute(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, prioridade, agendar_para)
            SELECT 'medico-' || (i % 700), '55218' || lpad(i::text, 8, '0'), 'campanha agendada', 'campanha',
                   (ARRAY[10, 5, 0, -5])[1 + i % 4], now() + interval '10 hours' + (i % 3600) * interval '1 second'
              FROM generate_series(1, \(Self.futureRows)) i
            """
        )
        try await queue.execute("ANALYZE fila_mensagens")
        return queue
    }

    /// Due rows at several priorities, some sharing a schedule (their ids break the tie); the
    /// ids in the order a claim must take them.
    private func addDueRows(_ queue: MessageQueue) async throws -> [UUID] {
        try await queue.execute(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, prioridade, agendar_para)
            SELECT 'medico-' || i, '55217' || lpad(i::text, 8, '0'), 'devida ' || i, 'resposta',
                   (ARRAY[10, 3, 0, -5])[1 + i % 4],
                   date_trunc('minute', now()) - (i % 5) * interval '1 minute'
              FROM generate_series(1, 30) i
            """
        )
        return try await queue.client.query(
            """
            SELECT id FROM fila_mensagens
             WHERE status = 'pendente' AND agendar_para <= now()
             ORDER BY prioridade DESC, agendar_para, id
            """,
            logger: logger
        ).collect().map { try $0.decode(UUID.self) }
    }

    @Test func aClaimTakesDueRowsInPriorityThenScheduleOrder() async throws {
        let queue = try await queueWithFutureRows()
        let expected = try await addDueRows(queue)
        #expect(expected.count == 30)
        // Batches of 7 end inside a priority and carry on into the next one.
        var claimed: [UUID] = []
        while true {
            let batch = try await queue.claim(workerID: "w1", limit: 7, logger: logger)
            if batch.isEmpty { break }
            #expect(batch.count == 7 || claimed.count + batch.count == expected.count)
            claimed += batch.map(\.id)
        }
        #expect(claimed == expected)
        #expect(try await queue.count(where: "status = 'pendente'") == Self.futureRows)
        #expect(try await queue.count(where: "status = 'processando' AND worker_id = 'w1'") == expected.count)
    }

    @Test func aClaimSkipsLockedRowsWithoutWaitingForThem() async throws {
        let url = try TestDatabase.current.url
        let queue = try await queueWithFutureRows()
        let expected = try await addDueRows(queue)
        // The first row of the highest priority and one further on, held by another
        // transaction (a claim in progress elsewhere).
        let locked = [expected[0], expected[9]]
        try await url.withConnection(logger: logger) { other in
            try await other.query("BEGIN", logger: logger)
            _ = try await other.query("SELECT id FROM fila_mensagens WHERE id = ANY(\(locked)) FOR UPDATE", logger: logger).collect()
            let free = expected.filter { !locked.contains($0) }
            let first = try await queue.claim(workerID: "w1", limit: 10, logger: logger)
            #expect(first.map(\.id) == Array(free.prefix(10)))
            let rest = try await queue.claim(workerID: "w2", limit: 100, logger: logger)
            #expect(rest.map(\.id) == Array(free.dropFirst(10)))
            try await other.query("ROLLBACK", logger: logger)
        }
        // Released, they are claimed like any other, in order.
        #expect(try await queue.claim(workerID: "w3", limit: 100, logger: logger).map(\.id) == locked)
    }

    @Test func anEmptyClaimReadsAFewPagesWhateverIsScheduledLater() async throws {
        let url = try TestDatabase.current.url
        let queue = try await queueWithFutureRows()
        let plan = try await url.withConnection(logger: logger) { connection in
            // The first claim on a connection plans fila_claim's statement (once per connection),
            // and the catalog reads of that planning would count here: measure the next one.
            _ = try await connection.query(MessageQueue.claimQuery(workerID: "w1", limit: 100), logger: logger).collect()
            return try await QueryPlan.explain(MessageQueue.claimQuery(workerID: "w1", limit: 100), on: connection, logger: logger)
        }
        #expect(plan.root.actualRows == 0)
        // One descent of the pending index per priority, not a walk over the 50,000 rows
        // due later (over 400 pages).
        #expect(plan.buffers < 100, "\(plan.buffers) buffers: \(plan.json)")
        #expect(try await queue.claim(workerID: "w1", limit: 100, logger: logger).isEmpty)
        #expect(try await queue.count(where: "status = 'pendente'") == Self.futureRows)
    }

    @Test func theOldestDueMessageIsFoundWithoutReadingRowsDueLater() async throws {
        let url = try TestDatabase.current.url
        let queue = try await queueWithFutureRows()
        try await queue.execute(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo, prioridade, agendar_para)
            VALUES ('medico-1', '5521900000001', 'x', 'resposta', 10, now() - interval '5 minutes'),
                   ('medico-2', '5521900000002', 'x', 'resposta', -5, now() - interval '42 minutes 10 seconds'),
                   ('medico-3', '5521900000003', 'x', 'resposta', 0, now() - interval '17 minutes')
            """
        )
        #expect(try await queue.metrics(logger: logger).mensagemMaisAntigaMinutos == 42)
        let plan = try await url.withConnection(logger: logger) { connection in
            try await QueryPlan.explain("SELECT mensagem_mais_antiga_minutos FROM ops.fila_metricas", on: connection, logger: logger)
        }
        #expect(plan.buffers < 100, "\(plan.buffers) buffers: \(plan.json)")
    }
}
