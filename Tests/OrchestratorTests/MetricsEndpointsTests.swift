import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Observability
import Outbound
import PostgresNIO
import Queue
import Resilience
import Testing

@testable import Orchestrator

/// `GET /metrics` and `GET /metrics/history` over HTTP against a real database, with real
/// sends through the WhatsApp pipeline to the fake Evolution. Each test has its own registry,
/// so counts are exact. Serialized, and the bad inputs share one database, so the suite takes
/// few of the test server's connections from the rest of the run.
@Suite("Metrics endpoints", .migratedDatabase, .serialized, .timeLimit(.minutes(2)))
struct MetricsEndpointsTests {
    let logger = TestDatabase.logger

    private func sql(_ text: String, _ client: PostgresClient) async throws {
        try await client.query(PostgresQuery(unsafeSQL: text), logger: logger)
    }

    private func scrape(_ http: any TestClientProtocol) async throws -> PrometheusText {
        try await http.execute(uri: "/metrics", method: .get) { response in
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            return try PrometheusText(String(buffer: response.body))
        }
    }

    private func enqueue(_ queue: MessageQueue, _ count: Int, from first: Int = 0) async throws {
        for number in first..<(first + count) {
            _ = try await queue.enqueue(
                NewMessage(clienteID: "medico-\(number)", telefone: String(format: "55119%08d", number), conteudo: "mensagem \(number)", tipo: .campanha),
                logger: logger
            )
        }
    }

    @Test func sendsMoveTheCountersAndTheExpositionFollowsTheConventions() async throws {
        let client = try TestDatabase.current.client
        let metrics = FilaMetrics.make()
        FilaMetrics.addDatabaseGauges(to: metrics, client: client, maximumAge: .zero, timeLimit: .seconds(20), logger: logger)
        let evolution = try await FakeEvolution.start()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await sendAndScrape(client: client, metrics: metrics, evolution: evolution, http: http)
        } catch {
            try? await http.shutdown()
            await evolution.shutdown()
            throw error
        }
        try await http.shutdown()
        await evolution.shutdown()
    }

    private func sendAndScrape(client: PostgresClient, metrics: PrometheusMetrics, evolution: FakeEvolution, http: HTTPClient) async throws {
        let registry = CircuitBreakerRegistry(logger: logger)
        let provider = EvolutionProvider(
            configuration: .init(baseURL: evolution.baseURL, apiKey: evolution.apiKey, instance: evolution.instance, timeout: .seconds(10)),
            httpClient: http
        )
        let breaker = registry.breaker(named: "evolution")
        let sendMetrics = SendMetrics(factory: metrics.factory)
        let sender = WhatsAppSender(
            routes: [.init(provider: provider, breaker: breaker)],
            rateLimiter: RateLimiter(postgres: PostgresRateLimitStore(client: client), logger: logger),
            metrics: sendMetrics
        )
        let guarded = GuardedSender(guardrails: Guardrails(client: client, logger: logger), sender: sender, metrics: sendMetrics)
        metrics.addLive { SendMetrics.circuitSamples([breaker]) }

        let queue = MessageQueue(client: client)
        try await sql("INSERT INTO worker_heartbeats (id, kind, host, pid, version) VALUES ('w1', 'worker', 't', 1, 't')", client)
        try await enqueue(queue, 3)
        let claimed = try await queue.claim(workerID: "w1", limit: 3, logger: logger)
        try #require(claimed.count == 3)
        // Two unclaimed, one of them not due yet.
        try await enqueue(queue, 1, from: 10)
        _ = try await queue.enqueue(
            NewMessage(clienteID: "medico-11", telefone: "5511900000011", conteudo: "depois", agendarPara: Date().addingTimeInterval(3600)),
            logger: logger
        )

        for message in claimed.prefix(2) {
            guard case .sent = await guarded.send(message, logger: logger) else { Issue.record("expected a send"); return }
        }
        // A blocked doctor's message is refused before the rate limiter; then, unguarded, a
        // provider failure.
        try await sql("SELECT ops.block_medico('medico-2', 'metrics test')", client)
        guard case .permanentFailure(.failedGuardrail, "guardrail:blocked", _, nil) = await guarded.send(claimed[2], logger: logger) else {
            Issue.record("expected a guardrail refusal")
            return
        }
        evolution.mode = .status(500, body: #"{"error":"boom"}"#)
        guard case .retryableFailure = await sender.send(claimed[2], logger: logger) else { Issue.record("expected a provider failure"); return }

        let app = Application(router: HTTPServer.makeRouter(metrics: MetricsAPI(metrics: metrics, client: client, logger: logger)))
        try await app.test(.router) { http in
            _ = try await http.execute(uri: "/no/such/path", method: .get) { #expect($0.status == .notFound) }
            _ = try await scrape(http)
            let text = try await scrape(http)

            #expect(text.value("wa_messages_sent_total", ["provider": "evolution", "outcome": "SENT"]) == 2)
            #expect(text.value("wa_messages_sent_total", ["provider": "evolution", "outcome": "FAILED_PROVIDER"]) == 1)
            #expect(text.value("wa_send_duration_seconds_count", ["provider": "evolution"]) == 3)
            #expect(text.value("wa_rate_limit_decisions_total", ["store": "postgres", "result": "allowed"]) == 3)
            #expect(text.value("wa_guardrail_decisions_total", ["guardrail": "none", "decision": "allowed"]) == 2)
            #expect(text.value("wa_guardrail_decisions_total", ["guardrail": "blocked", "decision": "refused"]) == 1)
            #expect(text.value("wa_guardrail_decisions_total", ["guardrail": "contact_cap_7d", "decision": "refused"]) == nil)
            let lastSend = try #require(text.value("wa_last_successful_send_timestamp_seconds"))
            #expect(abs(lastSend - Date().timeIntervalSince1970) < 600)
            #expect(text.value("wa_circuit_breaker_state", ["provider": "evolution", "state": "CLOSED"]) == 1)
            #expect(text.value("wa_circuit_breaker_state", ["provider": "evolution", "state": "OPEN"]) == 0)
            #expect(text.all("wa_circuit_breaker_state").count == CircuitState.allCases.count)
            #expect(text.value("wa_provider_up", ["provider": "evolution"]) == 1)

            // From Postgres: the claimed rows are still processando (no outcome written here).
            #expect(text.value("wa_outbox_messages", ["status": "processando"]) == 3)
            #expect(text.value("wa_outbox_messages", ["status": "pendente"]) == 2)
            #expect(text.value("wa_outbox_due_messages") == 1)
            #expect(text.value("wa_outbox_oldest_message_age_seconds").map { $0 >= 0 && $0 < 600 } == true)
            #expect(text.value("wa_heartbeat_age_seconds", ["kind": "worker"]).map { $0 < 600 } == true)
            #expect(text.value("wa_processes_alive", ["kind": "scheduler"]) == 0)
            #expect(text.value("wa_metrics_sample_ok", ["source": "postgres"]) == 1)

            // The requests before this one, by route template; an unknown path is one series.
            #expect(text.value("wa_http_requests_total", ["route": "/metrics", "method": "GET", "status": "200"]) == 1)
            #expect(text.value("wa_http_requests_total", ["route": "unmatched", "method": "GET", "status": "404"]) == 1)
            #expect(text.families["wa_http_request_duration_seconds"]?.type == "histogram")
        }
    }

    /// The database gauges are read at most once per `maximumAge`, whoever scrapes.
    @Test func databaseGaugesAreCachedBriefly() async throws {
        let client = try TestDatabase.current.client
        let cached = PrometheusMetrics(descriptors: FilaMetrics.descriptors)
        FilaMetrics.addDatabaseGauges(to: cached, client: client, maximumAge: .seconds(600), timeLimit: .seconds(20), logger: logger)
        let fresh = PrometheusMetrics(descriptors: FilaMetrics.descriptors)
        FilaMetrics.addDatabaseGauges(to: fresh, client: client, maximumAge: .zero, timeLimit: .seconds(20), logger: logger)
        let queue = MessageQueue(client: client)

        try await enqueue(queue, 2)
        #expect(try PrometheusText(await cached.exposition(logger: logger)).value("wa_outbox_messages", ["status": "pendente"]) == 2)
        try await enqueue(queue, 3, from: 10)
        #expect(try PrometheusText(await cached.exposition(logger: logger)).value("wa_outbox_messages", ["status": "pendente"]) == 2)
        #expect(try PrometheusText(await fresh.exposition(logger: logger)).value("wa_outbox_messages", ["status": "pendente"]) == 5)
    }

    /// A Postgres that never answers costs a scrape its time limit, not a hang: the
    /// in-process metrics still come, and the sampled ones say they failed.
    @Test func aScrapeAnswersWithinItsLimitWhenPostgresDoesNotAnswer() async throws {
        // Never run, so every query waits: the worst case, a pool that cannot connect.
        let url = try DatabaseURL("postgres://fila@127.0.0.1:1/fila")
        let client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
        let metrics = FilaMetrics.make()
        FilaMetrics.addDatabaseGauges(to: metrics, client: client, timeLimit: .milliseconds(500), logger: logger)
        SendMetrics(factory: metrics.factory).recordCall(provider: "sandbox", outcome: .sent, duration: .milliseconds(3))

        let started = ContinuousClock.now
        let text = try PrometheusText(await metrics.exposition(logger: logger))
        // Generous for a loaded machine; without the limit this would never return.
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(text.value("wa_messages_sent_total", ["provider": "sandbox", "outcome": "SENT"]) == 1)
        #expect(text.value("wa_metrics_sample_ok", ["source": "postgres"]) == 0)
        #expect(text.all("wa_outbox_messages").isEmpty)
    }

    @Test func historyReturnsASnapshotMetricsPointsInOrder() async throws {
        let client = try TestDatabase.current.client
        try await sql(
            """
            INSERT INTO metrics_snapshots (metric_name, value, labels, created_at) VALUES
                ('fila_pendentes', 7, '{}', now() - interval '10 minutes'),
                ('fila_pendentes', 5, '{}', now() - interval '2 hours'),
                ('fila_pendentes', 6, '{}', now() - interval '30 minutes'),
                ('fila_pendentes', 9, '{}', now() - interval '30 hours'),
                ('fila_processando', 1, '{}', now() - interval '10 minutes'),
                ('mensagens_enviadas', 12, '{"provider": "evolution"}', now() - interval '5 minutes')
            """, client)
        let app = Application(router: HTTPServer.makeRouter(metrics: MetricsAPI(metrics: FilaMetrics.make(), client: client, logger: logger)))
        try await app.test(.router) { http in
            func points(_ query: String) async throws -> [[String: Any]] {
                try await http.execute(uri: "/metrics/history?\(query)", method: .get) { response in
                    #expect(response.status == .ok)
                    let body = try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
                    return try #require(body["points"] as? [[String: Any]])
                }
            }
            #expect(try await points("name=fila_pendentes").map { $0["value"] as? Double } == [5, 6, 7])
            #expect(try await points("name=fila_pendentes&hours=1").map { $0["value"] as? Double } == [6, 7])
            #expect(try await points("name=fila_pendentes&hours=168").count == 4)
            let sent = try #require(try await points("name=mensagens_enviadas").first)
            #expect(sent["labels"] as? [String: String] == ["provider": "evolution"])
            #expect((sent["time"] as? String)?.hasSuffix("Z") == true)
            #expect(try await points("name=nothing_recorded").isEmpty)
        }
    }

    static let badHistoryQueries = [
        ("", "missing_name"),
        ("hours=2", "missing_name"),
        ("name=", "missing_name"),
        ("name=fila%20pendentes", "invalid_name"),
        ("name=Fila_Pendentes", "invalid_name"),
        ("name=1fila", "invalid_name"),
        ("name=\(String(repeating: "a", count: 101))", "invalid_name"),
        ("name=fila_pendentes&hours=0", "invalid_hours"),
        ("name=fila_pendentes&hours=169", "invalid_hours"),
        ("name=fila_pendentes&hours=1.5", "invalid_hours"),
        ("name=fila_pendentes&hours=", "invalid_hours"),
    ]

    @Test func historyRefusesBadParameters() async throws {
        let client = try TestDatabase.current.client
        let app = Application(router: HTTPServer.makeRouter(metrics: MetricsAPI(metrics: FilaMetrics.make(), client: client, logger: logger)))
        try await app.test(.router) { http in
            for (query, code) in Self.badHistoryQueries {
                try await http.execute(uri: "/metrics/history?\(query)", method: .get) { response in
                    #expect(response.status == .badRequest, "\(query)")
                    #expect(response.headers[.contentType] == "application/json")
                    let body = try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
                    let error = try #require(body["error"] as? [String: Any])
                    #expect(error["code"] as? String == code, "\(query)")
                    #expect((error["message"] as? String)?.isEmpty == false)
                }
            }
        }
    }
}

/// The exposition reader refuses what Prometheus or the naming rules would, so the tests
/// above cannot pass on a malformed `/metrics`.
@Suite("Prometheus text reader")
struct PrometheusTextTests {
    @Test func readsAWellFormedExposition() throws {
        let text = try PrometheusText(
            """
            # HELP wa_x_total Things.
            # TYPE wa_x_total counter
            wa_x_total{provider="a\\"b",outcome="SENT"} 3
            # HELP wa_d_seconds Durations.
            # TYPE wa_d_seconds histogram
            wa_d_seconds_bucket{le="0.5"} 1
            wa_d_seconds_bucket{le="+Inf"} 2
            wa_d_seconds_sum 1.25
            wa_d_seconds_count 2

            """
        )
        #expect(text.value("wa_x_total", ["provider": "a\"b", "outcome": "SENT"]) == 3)
        #expect(text.value("wa_d_seconds_count") == 2)
    }

    @Test(arguments: [
        "# HELP wa_x Things.\n# TYPE wa_x counter\nwa_x 1\n",
        "# HELP wa_x_total Things.\n# TYPE wa_x_total gauge\nwa_x_total 1\n",
        "# TYPE wa_x_total counter\nwa_x_total 1\n",
        "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n",
        "# HELP wa_x_total Things.\n# TYPE wa_x_total counter\nwa_x_total{provider=a} 1\n",
        "# HELP wa_x_total Things.\n# TYPE wa_x_total counter\nwa_x_total{message_id=\"1\"} 1\n",
        "# HELP wa_x_total Things.\n# TYPE wa_x_total counter\nwa_x_total one\n",
        "wa_y 1\n",
        "# HELP wa_d Durations.\n# TYPE wa_d histogram\nwa_d_bucket{le=\"1\"} 1\nwa_d_sum 1\nwa_d_count 1\n",
        "# HELP wa_d Durations.\n# TYPE wa_d histogram\nwa_d_bucket{le=\"+Inf\"} 1\nwa_d_sum 1\n",
        "# HELP wa_d Durations.\n# TYPE wa_d histogram\nwa_d_bucket{le=\"+Inf\"} 2\nwa_d_sum 1\nwa_d_count 1\n",
        "# HELP wa_g A gauge.\n# TYPE wa_g gauge\nwa_g 1",
    ])
    func refusesWhatPrometheusOrTheConventionsWould(text: String) {
        #expect(throws: PrometheusText.Invalid.self) { try PrometheusText(text) }
    }
}
