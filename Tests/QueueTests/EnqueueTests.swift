import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

@Suite("Enqueue: one, many, idempotent, validated, transactional", .migratedDatabase)
struct EnqueueTests {
    @Test func enqueuesOneWithDefaults() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        let result = try await queue.enqueue(message(1), logger: logger)
        #expect(result.inserted)
        let row = try await queue.row(result.id)
        #expect(row.status == "pendente")
        #expect(row.tentativas == 0)
        #expect(row.outcome == nil)
        #expect(row.dueInSeconds <= 0)
    }

    @Test func enqueuesManyAcrossChunksInInputOrder() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
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

    @Test func aDuplicateKeyReturnsTheExistingRow() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
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
        let queue = try MessageQueue(client: TestDatabase.current.client)
        await #expect {
            try await queue.enqueue([message(1), bad, message(3)], logger: logger)
        } throws: { error in
            guard let error = error as? EnqueueError else { return false }
            return error.index == 1 && error.validation.field == field
        }
        #expect(try await queue.count() == 0)
    }

    @Test func insideARolledBackTransactionLeavesNothing() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
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

    @Test func oneNotificationPerStatementNotPerRow() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        try await url.withConnection(logger: logger) { listener in
            try await listener.listen(on: "fila_mensagens") { notifications in
                _ = try await MessageQueue(client: client).enqueue((0..<500).map { message($0) }, logger: logger)
                _ = try await MessageQueue(client: client).enqueue(message(9999), logger: logger)
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

    /// `validate()` accepts a message exactly when the schema stores it: each candidate is
    /// validated and, separately, inserted with plain SQL and no validation. Lengths are
    /// code points (Postgres's `length()`), NUL is refused in every text column and in
    /// metadata's strings, metadata follows jsonb's own grammar and ranges. Left out: the
    /// limits that are ours alone and stricter on purpose (a conteudo of line breaks only,
    /// correlation_id outside `CorrelationID`'s rule, metadata over 16 KiB).
    @Test func validationAgreesWithTheSchema() async throws {
        let flag = "🇧🇷"  // one Character, two code points
        let accent = "e\u{301}"  // one Character, two code points
        var candidates: [(String, NewMessage)] = [("a plain message", message(1))]
        func add(_ label: String, _ change: (inout NewMessage) -> Void) {
            var candidate = message(candidates.count + 1)
            change(&candidate)
            candidates.append((label, candidate))
        }
        add("conteudo of 2,048 flags (4,096 code points)") { $0.conteudo = String(repeating: flag, count: 2_048) }
        add("conteudo of 2,049 flags (4,098 code points)") { $0.conteudo = String(repeating: flag, count: 2_049) }
        add("conteudo of 2,100 flags") { $0.conteudo = String(repeating: flag, count: 2_100) }
        add("conteudo of 2,049 accented letters") { $0.conteudo = String(repeating: accent, count: 2_049) }
        add("conteudo of 4,096 x") { $0.conteudo = String(repeating: "x", count: 4_096) }
        add("conteudo of 4,097 x") { $0.conteudo = String(repeating: "x", count: 4_097) }
        add("conteudo of spaces") { $0.conteudo = "   " }
        add("conteudo with NUL") { $0.conteudo = "oi\u{0}tudo bem" }
        add("conteudo of NUL only") { $0.conteudo = "\u{0}" }
        add("cliente_id of 100 flags") { $0.clienteID = String(repeating: flag, count: 100) }
        add("cliente_id of 101 flags") { $0.clienteID = String(repeating: flag, count: 101) }
        add("cliente_id empty") { $0.clienteID = "" }
        add("cliente_id with NUL") { $0.clienteID = "medico\u{0}" }
        add("telefone of Arabic-Indic digits") { $0.telefone = "٥٥١١٩٩٩٩٩٠٠٠٠" }
        add("telefone of 16 digits") { $0.telefone = "5511999990000123" }
        add("idempotency_key of 100 flags") { $0.idempotencyKey = String(repeating: flag, count: 100) }
        add("idempotency_key of 101 flags") { $0.idempotencyKey = String(repeating: flag, count: 101) }
        add("idempotency_key with NUL") { $0.idempotencyKey = "k\u{0}" }
        add("correlation_id with NUL") { $0.correlationID = "c\u{0}" }
        add("prioridade 100") { $0.prioridade = 100 }
        add("prioridade -101") { $0.prioridade = -101 }
        add("max_tentativas 0") { $0.maxTentativas = 0 }
        add("max_tentativas 100") { $0.maxTentativas = 100 }
        // 2000-01-01 plus microseconds: the last day Postgres stores, and the day after.
        add("agendar_para in 294276") { $0.agendarPara = Date(timeIntervalSince1970: 946_684_800 + 9_223_371_331_200 - 86_400) }
        add("agendar_para in 294277") { $0.agendarPara = Date(timeIntervalSince1970: 946_684_800 + 9_223_371_331_200 + 86_400) }
        for (label, metadata) in [
            ("metadata with a \\u0000 value", #"{"nota":"a\u0000b"}"#),
            ("metadata with a \\u0000 key", #"{"\u0000":1}"#),
            ("metadata with a raw NUL", "{\"nota\":\"a\u{0}b\"}"),
            ("metadata with a lone high surrogate", #"{"a":"\ud83d"}"#),
            ("metadata with a lone low surrogate", #"{"a":"\ude00"}"#),
            ("metadata with a surrogate pair", #"{"a":"\ud83d\ude00"}"#),
            ("metadata with 131,072 digits before the point", #"{"a":1e131071}"#),
            ("metadata with 131,073 digits before the point", #"{"a":1e131072}"#),
            ("metadata with scale 16,383", #"{"a":1.5e-16382}"#),
            ("metadata with scale 16,384", #"{"a":1.5e-16383}"#),
            ("metadata with a zero of scale 16,384", #"{"a":0e-16384}"#),
            ("metadata with an exponent of a billion", #"{"a":0e1073741823}"#),
            ("metadata with a leading zero", #"{"a":01}"#),
            ("metadata with a form feed", "{\"a\":1}\u{0C}"),
            ("metadata with spaces around", "  {\"a\": [1, {\"b\": null}], \"c\": true}\r\n"),
            ("metadata that is an array", "[1, 2]"),
            ("metadata that is a string", #""texto""#),
            ("metadata with a bad escape", #"{"a":"\x"}"#),
            ("metadata with an escaped slash", #"{"a":"\/"}"#),
            ("metadata with -0 and 1E+2", #"{"a":-0,"b":1E+2}"#),
        ] {
            add(label) { $0.metadata = metadata }
        }

        let queue = try MessageQueue(client: TestDatabase.current.client)
        for (label, candidate) in candidates {
            let accepted = (try? candidate.validate()) != nil
            let stored: Bool
            do {
                try await queue.client.query(
                    """
                    INSERT INTO fila_mensagens
                        (cliente_id, telefone, conteudo, tipo, prioridade, max_tentativas, agendar_para,
                         idempotency_key, correlation_id, metadata)
                    VALUES (\(candidate.clienteID), \(candidate.telefone), \(candidate.conteudo), \(candidate.tipo.rawValue),
                            \(Int32(candidate.prioridade)), \(Int32(candidate.maxTentativas)), \(candidate.agendarPara ?? Date()),
                            \(candidate.idempotencyKey), \(candidate.correlationID), \(candidate.metadata)::jsonb)
                    """,
                    logger: logger
                )
                stored = true
            } catch {
                stored = false
            }
            #expect(accepted == stored, "\(label): validate() \(accepted ? "accepts" : "refuses") it, the schema \(stored ? "stores" : "refuses") it")
        }
    }

    /// The library refuses such a message as the command does: nothing written, the
    /// position and field named, nothing of the content in the error.
    @Test func aNulOrCodePointOverflowIsRefusedBeforeTheDatabase() async throws {
        let queue = try MessageQueue(client: TestDatabase.current.client)
        var flags = message(2)
        flags.conteudo = String(repeating: "🇧🇷", count: 2_100)
        var nul = message(3)
        nul.metadata = #"{"segredo":"a\u0000b"}"#
        for bad in [flags, nul] {
            await #expect {
                try await queue.enqueue([message(1), bad], logger: logger)
            } throws: { error in
                guard let error = error as? EnqueueError else { return false }
                return error.index == 1 && !error.description.contains("segredo") && !error.description.contains("🇧🇷")
            }
        }
        #expect(try await queue.count() == 0)
    }
}
