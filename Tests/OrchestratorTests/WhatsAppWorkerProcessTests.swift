import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Queue
import Resilience
import Testing

/// `fila worker --sender whatsapp` as a process, against a fake Evolution API: it sends,
/// follows a circuit another process opened, stops claiming while it is open, and obeys an
/// override set with psql.
@Suite("fila worker with the WhatsApp sender", .migratedDatabase, .timeLimit(.minutes(3)))
struct WhatsAppWorkerProcessTests {
    let logger = TestDatabase.logger

    struct Failure: Error, CustomStringConvertible {
        var description: String { "HTTP 500: Connection Closed" }
    }

    private func scalar<T: PostgresDecodable & Sendable>(_ client: PostgresClient, _ type: T.Type, _ sql: String) async throws -> T? {
        do {
            return try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first?.decode(T.self)
        } catch {
            Issue.record("\(sql): \(String(reflecting: error))")
            throw error
        }
    }

    private func waitUntil(_ what: String, seconds: Double = 30, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out waiting until \(what)")
    }

    private func enqueue(_ text: String, client: PostgresClient) async throws {
        let message = NewMessage(clienteID: "medico-7", telefone: "5511999990007", conteudo: text, tipo: .followup)
        _ = try await MessageQueue(client: client).enqueue(message, logger: logger)
    }

    @Test func followsAnotherProcesssOpenCircuitAndObeysOverrides() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        let evolution = try await FakeEvolution.start()
        defer { Task { await evolution.shutdown() } }
        let worker = try FilaProcess.start(["worker", "--poll-interval-ms", "100"], environment: evolution.workerEnvironment.merging([
            "DATABASE_URL": url.connectionString,
            "LOG_LEVEL": "warning",
        ]) { _, new in new })

        // It sends.
        try await enqueue("primeira", client: client)
        try await waitUntil("the first message is sent") {
            try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada' AND provider = 'evolution'") == 1
        }
        #expect(evolution.sentTexts.map(\.text) == ["primeira"])
        #expect(evolution.sentTexts.first?.number == "5511999990007")
        #expect(try await scalar(client, Int.self, "SELECT usado::int8 FROM rate_limit_counters WHERE cliente_id = 'medico-7'") == 1)
        let workerID = try #require(try await scalar(client, String.self, "SELECT id FROM worker_heartbeats WHERE kind = 'worker'"))

        // Another process finds Evolution failing and opens its breaker.
        // A live process (so a worker that missed its broadcast still catches up).
        try await client.query(
            "INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('other-host:1:x', 'worker', 'other-host', 1, 'test')",
            logger: logger
        )
        let registry = CircuitBreakerRegistry(logger: logger)
        let breaker = registry.breaker(named: "evolution")
        let sync = CircuitBreakerSync(registry: registry, client: client, listenURL: url, processID: "other-host:1:x", logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await sync.run() }
            defer { group.cancelAll() }
            for _ in 0..<5 { _ = try? await breaker.execute { throw Failure() } }
            #expect(breaker.state == .open)

            try await waitUntil("the worker process follows it") {
                try await scalar(
                    client, Int.self,
                    "SELECT count(*) FROM circuit_transitions WHERE worker_id = '\(workerID)' AND to_state = 'OPEN' AND reason LIKE 'opened by other-host:1:x: 5 consecutive failures%'"
                ) == 1
            }
        }

        // While it is open the worker claims nothing and calls nobody, and says why.
        try await enqueue("segunda", client: client)
        try await waitUntil("the heartbeat shows the pause") {
            try await scalar(client, String.self, "SELECT coalesce(metadata->>'paused', '') FROM worker_heartbeats WHERE id = '\(workerID)'")?
                .contains("every provider's circuit is open: evolution OPEN") == true
        }
        #expect(try await scalar(client, String.self, "SELECT metadata->'circuits'->>'evolution' FROM worker_heartbeats WHERE id = '\(workerID)'") == "OPEN")
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE conteudo = 'segunda' AND status = 'pendente' AND tentativas = 0 AND outcome IS NULL") == 1)
        #expect(evolution.sendAttempts == 1)

        // An operator forces it closed with psql: the worker sends again.
        _ = try await client.query("SELECT ops.force_circuit('evolution', 'FORCED_CLOSED', 'the gateway is fine')", logger: logger).collect()
        try await waitUntil("the second message is sent") {
            try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada'") == 2
        }
        #expect(evolution.sentTexts.map(\.text) == ["primeira", "segunda"])

        worker.signal(SIGTERM)
        let output = await worker.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
        let states = try await client.query(
            PostgresQuery(unsafeSQL: "SELECT from_state || '->' || to_state FROM circuit_transitions WHERE worker_id = '\(workerID)' ORDER BY id"),
            logger: logger
        ).collect().map { try $0.decode(String.self) }
        #expect(states == ["CLOSED->OPEN", "OPEN->FORCED_CLOSED"])
    }
}
