import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// A correlation id followed through real `fila` processes: from `POST /jobs/{name}` to its
/// job_executions row, the response and the run's log lines; from `fila enqueue` to the
/// fila_mensagens rows, the worker's log lines and the header of the request the fake
/// Evolution API received.
///
/// Serialized, and with small pools: the suite shares one Postgres server with every other.
@Suite("Correlation ids through fila processes", .migratedDatabase(maximumConnections: 4), .serialized, .timeLimit(.minutes(3)))
struct CorrelationProcessTests {
    let logger = TestDatabase.logger
    let adminToken = "correlation-test-token-0123456789"

    @Test func fromAnHTTPRunRequestToTheRowTheResponseAndTheLog() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let fila = try FilaProcess.start(["serve"], environment: [
            "DATABASE_URL": url.connectionString, "FILA_SENDER": "sandbox", "HOST": "127.0.0.1", "PORT": "0",
            "ADMIN_TOKEN": adminToken, "LOG_FORMAT": "json", "LOG_LEVEL": "info", "DATABASE_POOL_SIZE": "4",
        ])
        let port = try await listeningPort(fila)

        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/jobs/resetar-fila-travada")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
        request.headers.add(name: "X-Correlation-ID", value: "suporte-123")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        _ = try await response.body.collect(upTo: 1 << 20)
        #expect(response.status.code == 200)
        #expect(response.headers["X-Correlation-ID"] == ["suporte-123"])

        // Without the header: a new id, returned, stored.
        var anonymous = HTTPClientRequest(url: "http://127.0.0.1:\(port)/jobs/resetar-fila-travada")
        anonymous.method = .POST
        anonymous.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
        let second = try await HTTPClient.shared.execute(anonymous, timeout: .seconds(30))
        _ = try await second.body.collect(upTo: 1 << 20)
        let generated = try #require(second.headers["X-Correlation-ID"].first)
        #expect(UUID(uuidString: generated) != nil)

        let stored = try await client.query("SELECT correlation_id, triggered_by FROM job_executions ORDER BY started_at", logger: logger)
            .collect().map { try $0.decode((String, String).self) }
        #expect(stored.map(\.0) == ["suporte-123", generated])
        #expect(stored.map(\.1) == ["http", "http"])

        fila.signal(SIGTERM)
        let output = await fila.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
        for id in ["suporte-123", generated] {
            let finished = jsonLines(output.standardError).filter { $0["msg"] as? String == "job finished" && $0["correlation_id"] as? String == id }
            #expect(finished.count == 1, "no 'job finished' line with correlation_id \(id): \(output.standardError)")
            #expect(finished.first?["job.name"] as? String == "resetar-fila-travada")
        }
    }

    @Test func fromEnqueueToTheRowsTheWorkersLogAndTheProviderRequest() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fila-correlation-\(UUID().uuidString).jsonl").path
        try """
            {"cliente_id":"medico-1","telefone":"5511999990001","conteudo":"lote um","tipo":"campanha"}
            {"cliente_id":"medico-2","telefone":"5511999990002","conteudo":"lote dois","tipo":"campanha"}
            {"cliente_id":"medico-3","telefone":"5511999990003","conteudo":"proprio","tipo":"campanha","correlation_id":"pedido-9"}

            """.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }

        let enqueued = try await FilaProcess.run(["enqueue", file], environment: ["DATABASE_URL": url.connectionString])
        #expect(enqueued.status == 0, "\(enqueued.standardError)")
        let summary = enqueued.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let batch = try #require(summary.split(separator: " ").last.map(String.init))
        #expect(summary == "inserted 3, duplicates 0, rejected 0, correlation_id \(batch)")
        // A row from elsewhere (psql, another producer) without an id: followed by its own id.
        let bare = try await client.query(
            "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo) VALUES ('medico-4', '5511999990004', 'sem id', 'resposta') RETURNING id::text",
            logger: logger
        ).collect().first.map { try $0.decode(String.self) }
        let bareID = try #require(bare)

        var expected: [String: String] = [:]  // conteudo -> correlation id
        var messageIDs: [String: String] = [:]  // message id -> correlation id
        for row in try await client.query("SELECT id::text, conteudo, correlation_id FROM fila_mensagens", logger: logger).collect() {
            let (id, conteudo, correlationID) = try row.decode((String, String, String?).self)
            expected[conteudo] = correlationID ?? id
            messageIDs[id] = correlationID ?? id
        }
        #expect(expected == ["lote um": batch, "lote dois": batch, "proprio": "pedido-9", "sem id": bareID])

        let evolution = try await FakeEvolution.start()
        defer { Task { await evolution.shutdown() } }
        let worker = try FilaProcess.start(["worker", "--poll-interval-ms", "100"], environment: evolution.workerEnvironment.merging([
            "DATABASE_URL": url.connectionString,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",
            "DATABASE_POOL_SIZE": "4",
        ]) { _, new in new })
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let sent = try await client.query("SELECT count(*) FROM fila_mensagens WHERE status = 'enviada'", logger: logger)
                .collect().first?.decode(Int.self)
            if sent == 4 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        worker.signal(SIGTERM)
        let output = await worker.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")

        // The provider got each message's id as a header.
        var received: [String: String] = [:]
        for request in evolution.requests {
            if let text = request.text { received[text] = request.header("X-Correlation-ID") }
        }
        #expect(received == expected)

        // Every log line about a message carries its id, and each message has such lines
        // (the provider call's among them).
        let lines = jsonLines(output.standardError)
        for (messageID, correlationID) in messageIDs {
            let about = lines.filter { ($0["fila.message_id"] as? String)?.lowercased() == messageID }
            #expect(!about.isEmpty, "no log line about \(messageID)")
            #expect(about.allSatisfy { $0["correlation_id"] as? String == correlationID }, "\(about)")
            #expect(about.contains { $0["msg"] as? String == "provider answered" }, "\(about)")
        }
        #expect(lines.filter { $0["correlation_id"] as? String == batch }.count >= 2)
    }

    /// The port `fila` says it listens on.
    private func listeningPort(_ fila: RunningFila) async throws -> Int {
        try await fila.listeningPort()
    }

    /// The JSON log lines of `standardError`, decoded.
    private func jsonLines(_ standardError: String) -> [[String: Any]] {
        standardError.split(separator: "\n").compactMap { line in
            try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        }
    }
}
