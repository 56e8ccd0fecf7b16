import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

/// `fila enqueue` as users run it: files and standard input, JSON lines and CSV, rejected
/// lines reported by number with exit status 65, duplicates counted, nothing half-written.
@Suite("fila enqueue", .migratedDatabase, .timeLimit(.minutes(3)))
struct EnqueueCommandTests {
    let logger = TestDatabase.logger

    private func environment(_ url: DatabaseURL) -> [String: String] {
        ["DATABASE_URL": url.connectionString]
    }

    private func write(_ text: String, suffix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fila-enqueue-\(UUID().uuidString).\(suffix)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The summary line without the batch's correlation id, which is generated.
    private func counts(_ output: FilaProcess.Output) -> String {
        let line = output.standardOutput.hasSuffix("\n") ? String(output.standardOutput.dropLast()) : output.standardOutput
        guard let range = line.range(of: ", correlation_id ") else { return line }
        return String(line[..<range.lowerBound])
    }

    /// The batch's correlation id, as the summary prints it.
    private func batchCorrelationID(_ output: FilaProcess.Output) -> String? {
        guard let range = output.standardOutput.range(of: ", correlation_id ") else { return nil }
        return output.standardOutput[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private struct Row: Equatable {
        let clienteID: String
        let telefone: String
        let conteudo: String
        let tipo: String
        let prioridade: Int
        let idempotencyKey: String?
    }

    private func rows(_ client: PostgresClient) async throws -> [Row] {
        var rows: [Row] = []
        let query: PostgresQuery = "SELECT cliente_id, telefone, conteudo, tipo, prioridade, idempotency_key FROM fila_mensagens ORDER BY telefone"
        for try await (clienteID, telefone, conteudo, tipo, prioridade, key) in try await client.query(query, logger: logger)
            .decode((String, String, String, String, Int, String?).self)
        {
            rows.append(Row(clienteID: clienteID, telefone: telefone, conteudo: conteudo, tipo: tipo, prioridade: prioridade, idempotencyKey: key))
        }
        return rows
    }

    @Test func jsonLinesWithRejectedLinesAndDuplicates() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        try await client.query(
            "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, idempotency_key) VALUES ('medico-0', '5521900000000', 'antes', 'camp-1:medico-0')",
            logger: logger
        )
        let file = try write(
            """
            {"cliente_id":"medico-1","telefone":"5521900000001","conteudo":"Olá, doutor","tipo":"campanha","prioridade":5,"idempotency_key":"camp-1:medico-1"}
            {"cliente_id":"medico-0","telefone":"5521900000000","conteudo":"de novo","tipo":"campanha","idempotency_key":"camp-1:medico-0"}

            not json
            {"cliente_id":"medico-3","telefone":"21-9999","conteudo":"x","tipo":"resposta"}
            {"cliente_id":"medico-4","telefone":"5521900000004","conteudo":"x","tipo":"spam"}
            {"cliente_id":"medico-5","telefone":"5521900000005","conteudo":"ok","tipo":"sistema","metadata":{"campanha":"jan"},"agendar_para":"2026-01-23T10:00:00-03:00"}
            {"cliente_id":"medico-6","telefone":"5521900000006","conteudo":"x","cor":"azul"}
            {"cliente_id":"medico-7","telefone":"5521900000007","conteudo":"sem tipo"}
            {"cliente_id":"medico-1","telefone":"5521900000001","conteudo":"Olá, doutor","tipo":"campanha","prioridade":5,"idempotency_key":"camp-1:medico-1"}

            """,
            suffix: "jsonl"
        )
        defer { try? FileManager.default.removeItem(atPath: file) }

        let output = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(output.status == 65)
        #expect(counts(output) == "inserted 2, duplicates 2, rejected 5")
        #expect(
            output.errorLines == [
                "line 4: not a JSON object",
                "line 5: telefone must be 10-15 digits with the country code, e.g. 5511999990000",
                "line 6: tipo 'spam' is not one of resposta, campanha, followup, sistema",
                "line 8: unknown field 'cor'",
                "line 9: tipo is missing (one of resposta, campanha, followup, sistema)",
            ]
        )
        #expect(
            try await rows(client) == [
                Row(clienteID: "medico-0", telefone: "5521900000000", conteudo: "antes", tipo: "resposta", prioridade: 0, idempotencyKey: "camp-1:medico-0"),
                Row(clienteID: "medico-1", telefone: "5521900000001", conteudo: "Olá, doutor", tipo: "campanha", prioridade: 5, idempotencyKey: "camp-1:medico-1"),
                Row(clienteID: "medico-5", telefone: "5521900000005", conteudo: "ok", tipo: "sistema", prioridade: 0, idempotencyKey: nil),
            ]
        )
        let (metadata, scheduled) = try await client.query(
            "SELECT metadata::text, agendar_para = '2026-01-23T13:00:00Z' FROM fila_mensagens WHERE cliente_id = 'medico-5'",
            logger: logger
        ).collect().first!.decode((String, Bool).self)
        #expect(metadata == #"{"campanha": "jan"}"#)
        #expect(scheduled)
    }

    @Test func csvFromStandardInputWithQuotedFields() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        // Columns in any order; quoted fields hold commas, quotes and a line break;
        // CRLF line ends; a record with the wrong number of fields is rejected, and so
        // is one without a tipo.
        let csv =
            "telefone,conteudo,cliente_id,tipo\r\n"
            + "5521900000001,\"Olá, doutor \"\"Silva\"\"\",medico-1,resposta\r\n"
            + "5521900000002,\"duas\nlinhas\",medico-2,followup\r\n"
            + "5521900000003,sem tipo,medico-3\r\n"
            + "5521900000004,,medico-4,campanha\r\n"
            + "5521900000005,último,medico-5,\r\n"
        let output = try await FilaProcess.run(["enqueue", "--format", "csv"], environment: environment(url), input: Data(csv.utf8))
        #expect(output.status == 65)
        #expect(counts(output) == "inserted 2, duplicates 0, rejected 3")
        #expect(
            output.errorLines == [
                "line 5: has 3 fields, the header has 4",
                "line 6: conteudo is missing",
                "line 7: tipo is missing (one of resposta, campanha, followup, sistema)",
            ]
        )
        #expect(
            try await rows(client) == [
                Row(clienteID: "medico-1", telefone: "5521900000001", conteudo: "Olá, doutor \"Silva\"", tipo: "resposta", prioridade: 0, idempotencyKey: nil),
                Row(clienteID: "medico-2", telefone: "5521900000002", conteudo: "duas\nlinhas", tipo: "followup", prioridade: 0, idempotencyKey: nil),
            ]
        )
    }

    @Test func aCleanFileExitsZeroAndARerunInsertsNothing() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let lines = (0..<12_000).map { index in
            #"{"cliente_id":"medico-\#(index % 900)","telefone":"55219\#(String(format: "%08d", index))","conteudo":"campanha","tipo":"campanha","idempotency_key":"c:\#(index)"}"#
        }
        let file = try write(lines.joined(separator: "\n") + "\n", suffix: "jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }

        let first = try await FilaProcess.run(["enqueue", "--batch-size", "5000", file], environment: environment(url))
        #expect(first.status == 0, "\(first.standardError)")
        #expect(counts(first) == "inserted 12000, duplicates 0, rejected 0")
        #expect(first.standardError.isEmpty)

        let again = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(again.status == 0)
        #expect(counts(again) == "inserted 0, duplicates 12000, rejected 0")
        let count = try await client.query("SELECT count(*) FROM fila_mensagens", logger: logger).collect().first!.decode(Int.self)
        #expect(count == 12_000)
    }

    /// Keys repeated across chunks, in crossing order, while two connections insert at once:
    /// each message is inserted once and every repeat counts as a duplicate.
    @Test func keysRepeatedAcrossConcurrentChunks() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let line = { (index: Int) in
            #"{"cliente_id":"medico-\#(index)","telefone":"55219\#(String(format: "%08d", index))","conteudo":"oi","tipo":"followup","idempotency_key":"k-\#(index)"}"#
        }
        // Chunks of 50: each pair inserted together holds the same 50 keys, one
        // ascending and one descending.
        let lines = (0..<4).flatMap { group in
            let keys = (group * 50)..<(group * 50 + 50)
            return keys.map(line) + keys.reversed().map(line)
        }
        let file = try write(lines.joined(separator: "\n") + "\n", suffix: "jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let output = try await FilaProcess.run(["enqueue", "--batch-size", "50", file], environment: environment(url))
        #expect(output.status == 0, "\(output.standardError)")
        #expect(counts(output) == "inserted 200, duplicates 200, rejected 0")
        let count = try await client.query("SELECT count(DISTINCT idempotency_key) FROM fila_mensagens", logger: logger).collect().first!.decode(Int.self)
        #expect(count == 200)
    }

    @Test func aBrokenInputIsRefusedAndWritesNothing() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let unknownColumn = try await FilaProcess.run(
            ["enqueue", "--format", "csv"],
            environment: environment(url),
            input: Data("cliente_id,telefone,conteudo,cor\nmedico-1,5521900000001,oi,azul\n".utf8)
        )
        #expect(unknownColumn.status == 65)
        #expect(unknownColumn.errorLines == ["fila: the CSV cannot be read: line 1: unknown column 'cor' in the header"])

        let unclosed = try await FilaProcess.run(
            ["enqueue", "--format", "csv"],
            environment: environment(url),
            input: Data("cliente_id,telefone,conteudo,tipo\nmedico-1,5521900000001,oi,resposta\nmedico-2,5521900000002,\"sem fim\n".utf8)
        )
        #expect(unclosed.status == 65)
        #expect(unclosed.errorLines == ["fila: the CSV cannot be read: line 3: a quoted field is not closed"])

        let missing = try await FilaProcess.run(["enqueue", "/nonexistent/campanha.jsonl"], environment: environment(url))
        #expect(missing.status == 65)
        #expect(missing.errorLines == ["fila: cannot read /nonexistent/campanha.jsonl"])

        let notText = try await FilaProcess.run(["enqueue"], environment: environment(url), input: Data([0xff, 0xfe, 0x00, 0x41]))
        #expect(notText.status == 65)
        #expect(notText.errorLines == ["fila: the input is not UTF-8 text"])

        let badFormat = try await FilaProcess.run(["enqueue", "--format", "xml"], environment: environment(url))
        #expect(badFormat.status == 64)
        #expect(badFormat.standardError.contains("--format must be jsonl or csv"))

        let count = try await client.query("SELECT count(*) FROM fila_mensagens", logger: logger).collect().first!.decode(Int.self)
        #expect(count == 0)
    }

    /// Lines that pass a naive check but that the schema refuses (lengths in code points,
    /// NUL in text or in metadata's strings) are rejected one by one, before the insert, with
    /// a reason that quotes nothing of the message; the valid lines around them, in the same
    /// chunk, are inserted. A value echoed in a reason is escaped for the terminal.
    @Test func linesTheSchemaWouldRefuseAreRejectedOneByOne() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let flags = String(repeating: "🇧🇷", count: 2_100)  // 2,100 Characters, 4,200 code points
        let lines = [
            #"{"cliente_id":"medico-1","telefone":"5521900000001","conteudo":"válida","tipo":"resposta"}"#,
            #"{"cliente_id":"medico-2","telefone":"5521900000002","conteudo":"segredo\u0000aqui","tipo":"resposta"}"#,
            #"{"cliente_id":"medico-3","telefone":"5521900000003","conteudo":"\#(flags)","tipo":"campanha"}"#,
            #"{"cliente_id":"medico-4","telefone":"5521900000004","conteudo":"oi","tipo":"resposta","metadata":{"nota":"segredo\u0000"}}"#,
            #"{"cliente_id":"\#(String(repeating: "🇧🇷", count: 101))","telefone":"5521900000005","conteudo":"oi","tipo":"resposta"}"#,
            #"{"cliente_id":"medico-6","telefone":"5521900000006","conteudo":"oi","tipo":"\u001b[31mspam"}"#,
            #"{"cliente_id":"medico-7","telefone":"5521900000007","conteudo":"oi","tipo":"sistema","idempotency_key":"k\u0000"}"#,
            #"{"cliente_id":"medico-9","telefone":"5521900000009","conteudo":"também válida","tipo":"followup"}"#,
        ]
        let file = try write(lines.joined(separator: "\n") + "\n", suffix: "jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }

        let output = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(output.status == 65, "\(output.standardError)")
        #expect(counts(output) == "inserted 2, duplicates 0, rejected 6")
        let errors = output.errorLines
        #expect(errors.count == 6)
        #expect(errors.first == "line 2: conteudo contains a NUL character (U+0000), which Postgres cannot store")
        #expect(errors.dropFirst(1).first == "line 3: conteudo is longer than 4096 characters (Unicode code points)")
        #expect(errors.dropFirst(2).first?.hasPrefix(#"line 4: metadata contains \u0000 (NUL), which Postgres cannot store"#) == true)
        #expect(errors.dropFirst(3).first == "line 5: cliente_id must be 1-200 characters (Unicode code points)")
        #expect(errors.dropFirst(4).first == #"line 6: tipo '\u{1B}[31mspam' is not one of resposta, campanha, followup, sistema"#)
        #expect(errors.dropFirst(5).first == "line 7: idempotency_key contains a NUL character (U+0000), which Postgres cannot store")
        // Nothing of the messages is echoed, and no raw control character reaches the terminal.
        #expect(!output.standardError.contains("segredo"))
        #expect(!output.standardError.contains("🇧🇷"))
        #expect(!output.standardError.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        #expect(
            try await rows(client) == [
                Row(clienteID: "medico-1", telefone: "5521900000001", conteudo: "válida", tipo: "resposta", prioridade: 0, idempotencyKey: nil),
                Row(clienteID: "medico-9", telefone: "5521900000009", conteudo: "também válida", tipo: "followup", prioridade: 0, idempotencyKey: nil),
            ]
        )
    }

    /// A rule this build does not know (a CHECK added by hand) still refuses only its own
    /// line: the chunk is split until the refused line stands alone, the others are
    /// inserted, and the reason names the constraint without quoting the row.
    @Test func aLineTheDatabaseStillRefusesIsRejectedAlone() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        try await client.query(
            "ALTER TABLE fila_mensagens ADD CONSTRAINT sem_palavra_proibida CHECK (conteudo NOT LIKE '%proibido%')",
            logger: logger
        )
        let lines = (1...6).map { index in
            let conteudo = index == 4 ? "texto proibido e secreto" : "mensagem \(index)"
            return #"{"cliente_id":"medico-\#(index)","telefone":"552190000000\#(index)","conteudo":"\#(conteudo)","tipo":"resposta"}"#
        }
        let file = try write(lines.joined(separator: "\n") + "\n", suffix: "jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }

        let output = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(output.status == 65, "\(output.standardError)")
        #expect(counts(output) == "inserted 5, duplicates 0, rejected 1")
        #expect(
            output.errorLines == [
                #"line 4: refused by the database: new row for relation "fila_mensagens" violates check constraint "sem_palavra_proibida""#
            ]
        )
        #expect(!output.standardError.contains("secreto"))
        #expect(try await rows(client).map(\.clienteID) == ["medico-1", "medico-2", "medico-3", "medico-5", "medico-6"])
    }

    /// A batch gets one correlation id, printed in the summary, on every line without its own;
    /// `--correlation-id` names it; a line's own id is kept; an id outside the rule is refused
    /// (the line) or a usage error (the flag).
    @Test func aBatchHasOneCorrelationIDUnlessLinesCarryTheirOwn() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let file = try write(
            """
            {"cliente_id":"medico-1","telefone":"5521900000001","conteudo":"a","tipo":"campanha"}
            {"cliente_id":"medico-2","telefone":"5521900000002","conteudo":"b","tipo":"campanha","correlation_id":"pedido-77"}
            {"cliente_id":"medico-3","telefone":"5521900000003","conteudo":"c","tipo":"campanha","correlation_id":""}
            {"cliente_id":"medico-4","telefone":"5521900000004","conteudo":"d","tipo":"campanha","correlation_id":"com espaço"}

            """,
            suffix: "jsonl"
        )
        defer { try? FileManager.default.removeItem(atPath: file) }
        func correlationIDs() async throws -> [String: String?] {
            var ids: [String: String?] = [:]
            for try await (cliente, id) in try await client.query("SELECT cliente_id, correlation_id FROM fila_mensagens", logger: logger)
                .decode((String, String?).self)
            {
                ids[cliente] = id
            }
            return ids
        }

        let output = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(output.status == 65, "\(output.standardError)")
        #expect(counts(output) == "inserted 3, duplicates 0, rejected 1")
        #expect(output.errorLines == ["line 4: correlation_id must be \(CorrelationIDRule.text)"])
        let generated = try #require(batchCorrelationID(output))
        #expect(UUID(uuidString: generated) != nil && generated == generated.lowercased())
        #expect(try await correlationIDs() == ["medico-1": generated, "medico-2": "pedido-77", "medico-3": generated])

        try await client.query("DELETE FROM fila_mensagens", logger: logger)
        let again = try await FilaProcess.run(["enqueue", "--correlation-id", "campanha-7", file], environment: environment(url))
        #expect(batchCorrelationID(again) == "campanha-7")
        #expect(try await correlationIDs() == ["medico-1": "campanha-7", "medico-2": "pedido-77", "medico-3": "campanha-7"])
        // A second batch gets a new id.
        try await client.query("DELETE FROM fila_mensagens", logger: logger)
        let third = try await FilaProcess.run(["enqueue", file], environment: environment(url))
        #expect(batchCorrelationID(third).map { $0 != generated } == true)

        let bad = try await FilaProcess.run(["enqueue", "--correlation-id", "não", file], environment: environment(url))
        #expect(bad.status == 64, "\(bad.standardError)")
        #expect(bad.standardError.contains("--correlation-id must be"))
    }
}

/// `CorrelationID.rule` as the tests expect it, written out: a change to the rule must show here.
enum CorrelationIDRule {
    static let text = "1-128 characters from A-Z a-z 0-9 and +-./:=@_"
}
