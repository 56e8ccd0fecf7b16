import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

/// `fila.enqueue` and `fila.enqueue_batch` (migration 0017) as a producer in another language
/// calls them: the rows they write, idempotency, the refusal of bad input with nothing
/// written, the producer's transaction deciding, and the wake-up of idle workers.
@Suite("SQL enqueue", .migratedDatabase)
struct SQLEnqueueTests {
    @Test func oneMessageWithItsFieldsAndItsKey() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        let first = try await client.query(
            """
            SELECT id, inserted FROM fila.enqueue('medico-42', '5511999990000', 'Olá, doutor', tipo => 'campanha', prioridade => 5,
                                                  idempotency_key => 'pedido-981', correlation_id => 'campanha-7',
                                                  metadata => '{"campanha_id": 7}')
            """,
            logger: logger
        ).collect().first!.decode((UUID, Bool).self)
        #expect(first.1)
        // Time-ordered like fila enqueue's ids: version 7, stamped about now.
        #expect(first.0.uuidString.dropFirst(14).first == "7")
        #expect(abs(TimeOrderedID.date(of: first.0).timeIntervalSinceNow) < 60)
        let row = try await client.query(
            "SELECT format('%s|%s|%s|%s|%s|%s|%s', cliente_id, tipo, prioridade, status, correlation_id, metadata->>'campanha_id', agendar_para <= now()) FROM fila_mensagens",
            logger: logger
        ).collect().first!.decode(String.self)
        #expect(row == "medico-42|campanha|5|pendente|campanha-7|7|t")

        // The same key again: the existing row, nothing written.
        let again = try await client.query(
            "SELECT id, inserted FROM fila.enqueue('medico-42', '5511999990000', 'outro texto', 'resposta', idempotency_key => 'pedido-981')",
            logger: logger
        ).collect().first!.decode((UUID, Bool).self)
        #expect(again.0 == first.0 && !again.1)
        #expect(try await queue.count() == 1)

        for (sql, words) in [
            ("SELECT fila.enqueue('', '5511999990000', 'x', 'resposta')", "cliente_id: must be 1-200 characters"),
            ("SELECT fila.enqueue('m', '+55 11 99999', 'x', 'resposta')", "telefone: must be 10-15 digits"),
            ("SELECT fila.enqueue('m', '5511999990000', E' \\n ', 'resposta')", "conteudo: is empty"),
            ("SELECT fila.enqueue('m', '5511999990000', repeat('a', 4097), 'resposta')", "conteudo: is longer than 4096"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'spam')", "tipo: must be resposta, campanha"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', NULL)", "tipo: is missing"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'resposta', prioridade => 101)", "prioridade: must be between -100 and 100"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'resposta', max_tentativas => 0)", "max_tentativas: must be between 1 and 100"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'resposta', correlation_id => 'has space')", "correlation_id: must be 1-128 characters"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'resposta', metadata => '[1]')", "metadata: must be a JSON object"),
            ("SELECT fila.enqueue('m', '5511999990000', 'x', 'resposta', agendar_para => 'infinity')", "agendar_para: must be a finite time"),
        ] {
            await expectRefused(client, sql, saying: words)
        }
        #expect(try await queue.count() == 1)
    }

    /// The transactional outbox: the message exists exactly when the producer's transaction
    /// commits, and the commit wakes a listening worker.
    @Test func theProducersTransactionDecidesAndItsCommitWakesWorkers() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        try await url.withConnection(logger: logger) { producer in
            _ = try await producer.query("BEGIN", logger: logger).collect()
            _ = try await producer.query("SELECT fila.enqueue('medico-1', '5511999990001', 'rolled back', 'resposta')", logger: logger).collect()
            _ = try await producer.query("ROLLBACK", logger: logger).collect()
        }
        #expect(try await queue.count() == 0)

        let woken = try await url.withConnection(logger: logger) { listener in
            try await listener.listen(on: "fila_mensagens") { notifications in
                try await url.withConnection(logger: logger) { producer in
                    _ = try await producer.query("BEGIN", logger: logger).collect()
                    _ = try await producer.query("SELECT fila.enqueue('medico-2', '5511999990002', 'committed', 'resposta')", logger: logger).collect()
                    _ = try await producer.query("COMMIT", logger: logger).collect()
                }
                for try await _ in notifications { return true }
                return false
            }
        }
        #expect(woken)
        #expect(try await queue.count(where: "conteudo = 'committed'") == 1)
    }

    @Test func aBatchIsAllOrNothingAndSaysWhatEachPositionBecame() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        _ = try await client.query("SELECT fila.enqueue('medico-0', '5511999990000', 'antes', 'resposta', idempotency_key => 'k-0')", logger: logger).collect()
        let results = try await client.query(
            """
            SELECT posicao, id::text, inserted FROM fila.enqueue_batch('[
                {"cliente_id": "medico-1", "telefone": "5511999990001", "conteudo": "um", "tipo": "campanha", "prioridade": 3},
                {"cliente_id": "medico-0", "telefone": "5511999990000", "conteudo": "de novo", "tipo": "resposta", "idempotency_key": "k-0"},
                {"cliente_id": "medico-2", "telefone": "5511999990002", "conteudo": "dois", "tipo": "resposta", "idempotency_key": "k-2",
                 "agendar_para": "2030-01-01T09:00:00-03:00", "metadata": {"lote": 1}},
                {"cliente_id": "medico-2", "telefone": "5511999990002", "conteudo": "dois outra vez", "tipo": "resposta", "idempotency_key": "k-2"}
            ]')
            """,
            logger: logger
        ).collect().map { try $0.decode((Int32, String, Bool).self) }
        #expect(results.map(\.0) == [1, 2, 3, 4])
        #expect(results.map(\.2) == [true, false, true, false])
        #expect(results[3].1 == results[2].1)
        #expect(try await queue.count() == 3)
        #expect(try await queue.count(where: "idempotency_key = 'k-2' AND agendar_para = '2030-01-01 12:00:00+00' AND metadata->>'lote' = '1'") == 1)
        #expect(try await queue.count(where: "cliente_id = 'medico-1' AND tipo = 'campanha' AND prioridade = 3") == 1)

        for (json, words) in [
            (#"{"cliente_id": "m"}"#, "mensagens: must be a JSON array"),
            (#"[{"cliente_id": "medico-9", "telefone": "5511999990009", "conteudo": "ok", "tipo": "resposta"}, {"cliente_id": "m", "telefone": "1", "conteudo": "x", "tipo": "resposta"}]"#, "message 2: telefone: must be 10-15 digits"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta", "phone": "1"}]"#, "message 1: unknown field phone"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta", "prioridade": "alta"}]"#, "message 1: prioridade and max_tentativas must be whole numbers"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta", "agendar_para": "amanhã"}]"#, "message 1: agendar_para: must be a time with its zone"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta", "agendar_para": "infinity"}]"#, "message 1: agendar_para: must be a time with its zone"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x", "tipo": "resposta", "agendar_para": "2030-01-01 09:00"}]"#, "message 1: agendar_para: must be a time with its zone"),
            (#"[{"cliente_id": "m", "telefone": "5511999990009", "conteudo": "x"}]"#, "message 1: tipo: is missing"),
            (#"[7]"#, "message 1: must be a JSON object"),
        ] {
            await expectRefused(client, "SELECT * FROM fila.enqueue_batch('\(json)')", saying: words)
        }
        // The valid first message of the refused batch was not written.
        #expect(try await queue.count(where: "cliente_id = 'medico-9'") == 0)
        #expect(try await queue.count() == 3)
    }
}
