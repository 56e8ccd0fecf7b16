import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Queue
import Testing

/// `fila worker --sender whatsapp` as a process with chips in the table: it sends through
/// them (the secret from the variable the row names), records which chip sent each message,
/// and with no provider in its environment still starts and waits for a chip. Three worker
/// processes sharing three chips never push one past its daily limit or its interval.
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

        // A chip added with psql (unpaced: the default 30 s between sends would only slow the
        // test): the worker hears it and sends through it.
        _ = try await client.query(
            "SELECT ops.add_chip('chip-one', 'One', 'evolution', 'chip-inst', 'CHIP_ONE_KEY', base_url => \(evolution.baseURL), min_intervalo_segundos => 0, motivo => 'test')",
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

    /// Three `fila worker` processes, three chips with a daily limit of 4 and a minimum
    /// interval of 1 s, fifteen messages: each chip sends exactly four (its fake receives
    /// four, once each), the three left wait FAILED_NO_CHIP with no attempt burned, and no two
    /// reservations of one chip are closer than the interval by the database's clock.
    @Test func limitsAndPacingHoldAcrossThreeWorkerProcesses() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        var started: [FakeEvolution] = []
        for index in 0..<3 { started.append(try await FakeEvolution.start(apiKey: "key-\(index)", instance: "inst-\(index)")) }
        let evolutions = started
        defer { Task { for evolution in evolutions { await evolution.shutdown() } } }
        for (index, evolution) in evolutions.enumerated() {
            _ = try await client.query(
                """
                SELECT ops.add_chip(\("chip-\(index)"), \("Chip \(index)"), 'evolution', \(evolution.instance), \("CHIP_\(index)_KEY"),
                                    base_url => \(evolution.baseURL), limite_diario => 4, min_intervalo_segundos => 1, motivo => 'test')
                """,
                logger: logger
            ).collect()
        }
        try await ChipReservationLog.install(client: client, logger: logger)
        var environment = ["FILA_SENDER": "whatsapp", "DATABASE_URL": url.connectionString, "LOG_LEVEL": "warning"]
        for (index, evolution) in evolutions.enumerated() { environment["CHIP_\(index)_KEY"] = evolution.apiKey }
        // One message at a time per process, so the three contend for every chip.
        let workers = try (0..<3).map { _ in
            try FilaProcess.start(["worker", "--poll-interval-ms", "100", "--concurrency", "1", "--batch", "1"], environment: environment)
        }
        let queue = MessageQueue(client: client)
        _ = try await queue.enqueue(
            (0..<15).map { NewMessage(clienteID: "medico-\($0)", telefone: String(format: "55119%08d", $0), conteudo: "mensagem \($0)", tipo: .resposta) },
            logger: logger
        )
        try await waitUntil("12 are sent and 3 wait for a chip", seconds: 90) {
            let sent = try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada'")
            let waiting = try await scalar(
                client, Int.self,
                "SELECT count(*) FROM fila_mensagens WHERE status = 'pendente' AND outcome = 'FAILED_NO_CHIP' AND outcome_reason_code = 'no_chip:limit_or_disconnected'"
            )
            return sent == 12 && waiting == 3
        }
        for workerProcess in workers { workerProcess.signal(SIGTERM) }
        for workerProcess in workers {
            let output = await workerProcess.waitForExit()
            #expect(output.status == 0, "\(output.standardError)")
        }

        for (index, evolution) in evolutions.enumerated() {
            #expect(evolution.sendAttempts == 4, "chip-\(index)")
            #expect(try await scalar(client, Int.self, "SELECT uso_hoje::int8 FROM chips WHERE id = 'chip-\(index)'") == 4)
            #expect(try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada' AND chip_id = 'chip-\(index)'") == 4)
        }
        let texts = evolutions.flatMap(\.sentTexts).map(\.text)
        #expect(texts.count == 12 && Set(texts).count == 12)
        #expect(try await scalar(client, Int.self, "SELECT count(*) FROM fila_mensagens WHERE tentativas > 0 OR status = 'erro'") == 0)
        // More than one process sent (worker_id stays on a sent row).
        #expect(try await scalar(client, Int.self, "SELECT count(DISTINCT worker_id) FROM fila_mensagens WHERE status = 'enviada'").map { $0 >= 2 } == true)
        let gaps = try await ChipReservationLog.closestGaps(client: client, logger: logger)
        #expect(gaps.map(\.chip) == ["chip-0", "chip-1", "chip-2"])
        for gap in gaps { #expect(gap.seconds >= 1, "\(gap.chip): two reservations \(gap.seconds) s apart") }
    }
}
