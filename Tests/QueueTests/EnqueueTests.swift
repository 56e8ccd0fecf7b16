import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

@Suite("Enqueue: one, many, idempotent, validated, transactional")
struct EnqueueTests {
    @Test func enqueuesOneWithDefaults() async throws {
        try await withQueue { queue throws in
            let result = try await queue.enqueue(message(1), logger: logger)
            #expect(result.inserted)
            let row = try await queue.row(result.id)
            #expect(row.status == "pendente")
            #expect(row.tentativas == 0)
            #expect(row.outcome == nil)
            #expect(row.dueInSeconds <= 0)
        }
    }

    @Test func enqueuesManyAcrossChunksInInputOrder() async throws {
        try await withQueue { queue throws in
            let count = MessageQueue.enqueueChunkSize * 2 + 17
            let messages = (0..<count).map { message($0, key: "k\($0)") }
            let results = try await queue.enqueue(messages, logger: logger)
            #expect(results.count == count)
            #expect(results.allSatisfy { $0.inserted })
            #expect(Set(results.map(\.id)).count == count)
            #expect(try await queue.count() == count)
            // Each result is the row of the message at the same position.
            let key = try await queue.client.query("SELECT idempotency_key FROM fila_mensagens WHERE id = \(results[count - 1].id)", logger: logger)
                .collect().first!.decode(String.self)
            #expect(key == "k\(count - 1)")
        }
    }

    @Test func aDuplicateKeyReturnsTheExistingRow() async throws {
        try await withQueue { queue throws in
            let first = try await queue.enqueue(message(1, key: "campanha-7:medico-1"), logger: logger)
            var changed = message(2, key: "campanha-7:medico-1")
            changed.conteudo = "different text"
            let second = try await queue.enqueue(changed, logger: logger)
            #expect(first.inserted)
            #expect(!second.inserted)
            #expect(second.id == first.id)
            #expect(try await queue.count() == 1)

            // Duplicates inside one batch, and against existing rows, in one call.
            let results = try await queue.enqueue(
                [message(3, key: "a"), message(4, key: "a"), message(5, key: "campanha-7:medico-1"), message(6)],
                logger: logger
            )
            #expect(results.map(\.inserted) == [true, false, false, true])
            #expect(results[1].id == results[0].id)
            #expect(results[2].id == first.id)
            #expect(try await queue.count() == 3)
        }
    }

    static func invalid(_ change: (inout NewMessage) -> Void) -> NewMessage {
        var bad = message(2)
        change(&bad)
        return bad
    }

    @Test(arguments: [
        (invalid { $0.telefone = "+55 (11) 99999-0000" }, "telefone"),
        (invalid { $0.telefone = "123" }, "telefone"),
        (invalid { $0.conteudo = "  \n " }, "conteudo"),
        (invalid { $0.conteudo = String(repeating: "x", count: 4097) }, "conteudo"),
        (invalid { $0.clienteID = "" }, "cliente_id"),
        (invalid { $0.prioridade = 101 }, "prioridade"),
        (invalid { $0.maxTentativas = 0 }, "max_tentativas"),
        (invalid { $0.idempotencyKey = "" }, "idempotency_key"),
        (invalid { $0.metadata = "[1, 2]" }, "metadata"),
        (invalid { $0.metadata = "{not json" }, "metadata"),
    ])
    func refusesAnInvalidMessageAndWritesNothing(bad: NewMessage, field: String) async throws {
        try await withQueue { queue throws in
            await #expect {
                try await queue.enqueue([message(1), bad, message(3)], logger: logger)
            } throws: { error in
                guard let error = error as? EnqueueError else { return false }
                return error.index == 1 && error.validation.field == field
            }
            #expect(try await queue.count() == 0)
        }
    }

    @Test func insideARolledBackTransactionLeavesNothing() async throws {
        try await withQueue { queue throws in
            struct Abort: Error {}
            await #expect {
                try await queue.client.withTransaction(logger: logger) { connection in
                    let results = try await MessageQueue.enqueue([message(1), message(2)], on: connection, logger: logger)
                    #expect(results.count == 2)
                    throw Abort()
                }
            } throws: { error in
                (error as? PostgresTransactionError)?.closureError is Abort
            }
            #expect(try await queue.count() == 0)

            try await queue.client.withTransaction(logger: logger) { connection in
                _ = try await MessageQueue.enqueue([message(3)], on: connection, logger: logger)
            }
            #expect(try await queue.count() == 1)
        }
    }

    @Test func oneNotificationPerStatementNotPerRow() async throws {
        try await TestDatabase.withMigrated { url throws in
            try await url.withConnection(logger: logger) { listener in
                try await listener.listen(on: "fila_mensagens") { notifications in
                    try await TestDatabase.withClient(url) { client throws in
                        _ = try await MessageQueue(client: client).enqueue((0..<500).map { message($0) }, logger: logger)
                        _ = try await MessageQueue(client: client).enqueue(message(9999), logger: logger)
                    }
                    // Two statements, two notifications; then a marker proves nothing else is queued.
                    try await url.withConnection(logger: logger) { try await $0.query("NOTIFY fila_mensagens, 'marker'", logger: logger) }
                    var payloads: [String] = []
                    for try await notification in notifications {
                        payloads.append(notification.payload)
                        if notification.payload == "marker" { break }
                    }
                    #expect(payloads == ["", "", "marker"])
                }
            }
        }
    }
}
