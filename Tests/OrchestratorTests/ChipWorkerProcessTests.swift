import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Queue
import Testing

/// `fila worker --sender whatsapp` as a process with chips in the table: it sends through
/// them (the secret from the variable the row names), records which chip sent each message,
/// and with no provider in its environment still starts and waits for a chip.
@Suite("fila worker sending through chips", .migratedDatabase, .timeLimit(.minutes(3)))
struct ChipWorkerProcessTests {
    let logger = TestDatabase.logger

    private func scalar<T: PostgresDecodable & Sendable>(_ client: PostgresClient, _ type: T.Type, _ sql: String) async throws -> T? {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first?.decode(T.self)
    }

    private func waitUntil(_ what: String, seconds: Double = 60, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out waiting until \(what)")
    }

    @Test func aWorkerWithoutProvidersSendsThroughTheTablesChips() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let evolution = try await FakeEvolution.start(apiKey: "chip-key", instance: "chip-inst")
        defer { Task { await evolution.shutdown() } }
        let queue = MessageQueue(client: client)
        let worker = try FilaProcess.start(["worker", "--poll-interval-ms", "100"], environment: [
            "FILA_SENDER": "whatsapp",
            "DATABASE_URL": url.connectionString,
            "LOG_LEVEL": "warning",
            "CHIP_ONE_KEY": evolution.apiKey,
        ])

        // No chip yet: the message waits FAILED_NO_CHIP, no attempt burned.
        _ = try await queue.enqueue(NewMessage(clienteID: "medico-1", telefone: "5511999990001", conteudo: "antes", tipo: .resposta), logger: logger)
        try await waitUntil("it waits for a chip") {
            try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE outcome = 'FAILED_NO_CHIP' AND outcome_reason_code = 'no_chip:none_eligible' AND tentativas = 0") == 1
        }

        // A chip added with psql: the worker hears it and sends through it.
        _ = try await client.query(
            "SELECT ops.add_chip('chip-one', 'One', 'evolution', 'chip-inst', 'CHIP_ONE_KEY', base_url => \(evolution.baseURL), motivo => 'test')",
            logger: logger
        ).collect()
        _ = try await client.query("UPDATE fila_mensagens SET agendar_para = now() WHERE status = 'pendente'", logger: logger).collect()
        _ = try await queue.enqueue(NewMessage(clienteID: "medico-2", telefone: "5511999990002", conteudo: "depois", tipo: .resposta), logger: logger)
        try await waitUntil("both are sent through the chip") {
            try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada' AND chip_id = 'chip-one' AND provider = 'evolution'") == 2
        }
        #expect(Set(evolution.sentTexts.map(\.text)) == ["antes", "depois"])
        #expect(try await scalar(client, Int.self, "SELECT uso_hoje::int8 FROM chips WHERE id = 'chip-one'") == 2)

        worker.signal(SIGTERM)
        let output = await worker.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
    }
}
