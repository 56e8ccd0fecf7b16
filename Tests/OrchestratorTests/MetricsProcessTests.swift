import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// `METRICS_PORT` on processes without the API: a `fila worker` and a `fila scheduler` each
/// serve `/metrics` and `/health`, and the worker's counters follow its real sends.
@Suite("Metrics of running fila processes", .migratedDatabase, .serialized, .timeLimit(.minutes(3)))
struct MetricsProcessTests {
    let logger = TestDatabase.logger

    private func start(_ command: String, _ url: DatabaseURL) async throws -> (RunningFila, Int) {
        let fila = try FilaProcess.start([command], environment: [
            "DATABASE_URL": url.connectionString, "FILA_SENDER": "sandbox", "HOST": "127.0.0.1", "METRICS_PORT": "0",
            "DATABASE_POOL_SIZE": "4",
        ])
        return (fila, try await fila.listeningPort("metrics endpoint listening on"))
    }

    private func get(_ port: Int, _ path: String) async throws -> (Int, String, String?) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 22)
        return (Int(response.status.code), String(buffer: body), response.headers.first(name: "content-type"))
    }

    private func count(_ client: PostgresClient, _ sql: String) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(Int.self)
    }

    @Test func aWorkerServesMetricsThatCountItsSends() async throws {
        let (url, client) = try (TestDatabase.current.url, TestDatabase.current.client)
        let (worker, port) = try await start("worker", url)
        try await client.query(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo)
            SELECT 'medico-' || i, '5521' || lpad(i::text, 9, '0'), 'x' FROM generate_series(1, 5) i
            """,
            logger: logger
        )
        var sent = 0
        for _ in 0..<1200 where sent < 5 {
            sent = try await count(client, "SELECT count(*) FROM fila_mensagens WHERE status = 'enviada'")
            if sent < 5 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(sent == 5)

        let (status, body, contentType) = try await get(port, "/metrics")
        #expect(status == 200)
        #expect(contentType == "text/plain; version=0.0.4; charset=utf-8")
        let text = try PrometheusText(body)
        #expect(text.value("wa_messages_sent_total", ["provider": "sandbox", "outcome": "SENT"]) == 5)
        #expect(text.value("wa_send_duration_seconds_count", ["provider": "sandbox"]) == 5)
        #expect(text.value("wa_outbox_messages", ["status": "pendente"]) == 0)
        #expect(text.value("wa_metrics_sample_ok", ["source": "postgres"]) == 1)
        #expect(try await get(port, "/health").0 == 200)

        worker.signal(SIGTERM)
        let output = await worker.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
    }

    @Test func aSchedulerServesMetricsOfItsJobs() async throws {
        let url = try TestDatabase.current.url
        let (scheduler, port) = try await start("scheduler", url)
        // The scheduler runs its due jobs at start; wait for the first to be counted.
        var text = try PrometheusText(try await get(port, "/metrics").1)
        for _ in 0..<600 where text.all("wa_job_runs_total").isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            text = try PrometheusText(try await get(port, "/metrics").1)
        }
        #expect(!text.all("wa_job_runs_total").isEmpty)
        #expect(text.all("wa_job_runs_total").allSatisfy { $0.labels["job"] != nil && $0.labels["status"] != nil })
        #expect(text.families["wa_job_lateness_seconds"]?.type == "histogram")
        #expect(try await get(port, "/health").0 == 200)

        scheduler.signal(SIGTERM)
        let output = await scheduler.waitForExit()
        #expect(output.status == 0, "\(output.standardError)")
    }
}
