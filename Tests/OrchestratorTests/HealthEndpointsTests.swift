import Database
import FilaTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PostgresNIO
import Testing

@testable import Orchestrator

/// The health endpoints over HTTP against a real database, each healthy and broken, read
/// as a monitor or a person would: status code, content type and body. Serialized: each
/// endpoint runs its checks at once on up to eight connections, and the suite's tests side
/// by side would take a hundred of the test server's connections from the rest of the run.
@Suite("Health endpoints", .migratedDatabase, .serialized, .timeLimit(.minutes(2)))
struct HealthEndpointsTests {
    let logger = TestDatabase.logger

    /// With `productionLimits` false, the checks get 20 s instead of 1-1.5 s: the tests of
    /// what a check reports must not turn into timeouts on a machine loaded by the rest of
    /// the suite. The tests of the time limits themselves keep the real ones.
    private func withAPI(
        client: PostgresClient? = nil,
        productionLimits: Bool = false,
        _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient) async throws -> Void
    ) async throws {
        let client = try client ?? TestDatabase.current.client
        let api = productionLimits
            ? HealthAPI(client: client, logger: logger)
            : HealthAPI(client: client, postgresTimeLimit: .seconds(20), checkTimeLimit: .seconds(20), logger: logger)
        let app = Application(router: HTTPServer.makeRouter(health: api))
        try await app.test(.router) { http in try await body(http, client) }
    }

    private func sql(_ text: String, _ client: PostgresClient) async throws {
        try await client.query(PostgresQuery(unsafeSQL: text), logger: logger)
    }

    /// A live worker, a live scheduler and an API, beating now, with turning claim loops.
    private func healthyProcesses(_ client: PostgresClient) async throws {
        try await sql(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, in_flight, claim_loop_at) VALUES
                ('w1', 'worker', 'host-a', 11, 't', 3, now() - interval '1 second'),
                ('s1', 'scheduler', 'host-b', 12, 't', 0, NULL),
                ('a1', 'api', 'host-b', 13, 't', 0, NULL)
            """, client)
        // The scheduler posts alerts to Slack.
        try await sql(#"UPDATE worker_heartbeats SET metadata = '{"alerts": "slack"}' WHERE id = 's1'"#, client)
    }

    private func json(_ response: TestResponse) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    private func entries(_ body: [String: Any], _ key: String) throws -> [[String: Any]] {
        try #require((body["checks"] as? [String: Any])?[key] as? [[String: Any]], "no check \(key)")
    }

    private func text(_ response: TestResponse) -> String {
        String(buffer: response.body)
    }

    // MARK: liveness and readiness

    @Test func livezAnswersOkAndTouchesNothing() async throws {
        // Built on a pool nobody runs: any query would hang.
        let idle = PostgresClient(configuration: .init(host: "127.0.0.1", port: 1, username: "nobody", password: nil, database: "none", tls: .disable))
        try await withAPI(client: idle) { http, _ in
            try await http.execute(uri: "/livez", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; charset=utf-8")
                #expect(self.text(response) == "ok")
            }
            try await http.execute(uri: "/livez?verbose", method: .get) { response in
                #expect(self.text(response) == "[+]ping ok\nlivez check passed\n")
            }
        }
    }

    @Test func readyPassesWhilePostgresAnswers() async throws {
        try await withAPI { http, _ in
            try await http.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                let ping = try self.entries(body, "postgres:responseTime")
                #expect(ping.first?["componentType"] as? String == "datastore")
                #expect(ping.first?["observedUnit"] as? String == "ms")
                #expect(ping.first?["status"] as? String == "pass")
                // Redis is not configured here: it is not checked.
                #expect((body["checks"] as? [String: Any])?["redis:responseTime"] == nil)
            }
            try await http.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(self.text(response) == "ok")
            }
            try await http.execute(uri: "/readyz?verbose", method: .get) { response in
                #expect(self.text(response) == "[+]postgres ok\nreadyz check passed\n")
            }
        }
    }

    /// Kubernetes' `?exclude=` and `/readyz/<name>`.
    @Test func readyzExcludesAChecksAndServesOneByName() async throws {
        try await withAPI { http, _ in
            try await http.execute(uri: "/readyz?exclude=postgres&verbose", method: .get) { response in
                #expect(response.status == .ok)
                #expect(self.text(response) == "[+]postgres excluded: ok\nreadyz check passed\n")
            }
            try await http.execute(uri: "/readyz?exclude=etcd&verbose", method: .get) { response in
                #expect(response.status == .ok)
                #expect(self.text(response) == "[+]postgres ok\nwarn: some health checks cannot be excluded: no matches for \"etcd\"\nreadyz check passed\n")
            }
            try await http.execute(uri: "/readyz/postgres", method: .get) { response in
                #expect(response.status == .ok)
                #expect(self.text(response) == "ok")
            }
            try await http.execute(uri: "/readyz/etcd", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    /// Postgres out of reach: liveness still passes (no restart loop), readiness fails
    /// within its one-second limit, and no reason reaches the public body.
    @Test func postgresUnreachableFailsReadinessButNotLiveness() async throws {
        let unreachable = PostgresClient(
            configuration: .init(host: "127.0.0.1", port: 1, username: "fila", password: "secret-pw", database: "fila", tls: .disable),
            backgroundLogger: logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await unreachable.run() }
            defer { group.cancelAll() }
            try await withAPI(client: unreachable, productionLimits: true) { http, _ in
                try await http.execute(uri: "/health", method: .get) { response in
                    #expect(response.status == .ok)
                }
                let start = ContinuousClock.now
                try await http.execute(uri: "/health/ready", method: .get) { response in
                    #expect(response.status == .serviceUnavailable)
                    #expect(response.headers[.contentType] == "application/health+json")
                    let body = try self.json(response)
                    #expect(body["status"] as? String == "fail")
                    #expect(try self.entries(body, "postgres:responseTime").first?["status"] as? String == "fail")
                    #expect(!self.text(response).contains("secret-pw"))
                }
                // 1 s alone; the margin is for a machine loaded by the whole suite.
                #expect(ContinuousClock.now - start < .seconds(5))
                try await http.execute(uri: "/readyz", method: .get) { response in
                    #expect(response.status == .internalServerError)
                    #expect(self.text(response) == "[-]postgres failed: reason withheld\nreadyz check failed\n")
                }
            }
        }
    }

    // MARK: queue

    @Test func filaReportsTheSixFieldsAndWarnsOnABacklog() async throws {
        try await withAPI { http, client in
            try await http.execute(uri: "/health/fila", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                let entry = try #require(try self.entries(body, "fila:backlog").first)
                for field in ["pendentes", "processando", "enviadas_ultima_hora", "erros_ultima_hora", "tempo_medio_processamento_ms", "mensagem_mais_antiga_minutos"] {
                    #expect(entry.keys.contains(field), "missing \(field)")
                }
                #expect(entry["pendentes"] as? Int == 0)
                // The seed's fields at the top too, as obter_metricas_fila returns them.
                #expect(body["pendentes"] as? Int == 0)
                #expect(body.keys.contains("tempo_medio_processamento_ms"))
                #expect(body.keys.contains("mensagem_mais_antiga_minutos"))
            }
            // 60 messages due for 40 minutes: above 50 for 30.
            try await self.sql(
                """
                INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, agendar_para)
                SELECT 'c', '5511999990000', 'oi ' || n, now() - interval '40 minutes' FROM generate_series(1, 60) n
                """, client)
            try await http.execute(uri: "/health/fila", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                #expect(body["status"] as? String == "warn")
                let entry = try #require(try self.entries(body, "fila:backlog").first)
                #expect(entry["status"] as? String == "warn")
                #expect(entry["pendentes"] as? Int == 60)
                #expect(entry["mensagem_mais_antiga_minutos"] as? Int == 40)
                #expect(body["pendentes"] as? Int == 60)
                #expect(body["mensagem_mais_antiga_minutos"] as? Int == 40)
                #expect(!(entry["output"] as? String ?? "").isEmpty)
            }
        }
    }

    // MARK: workers

    @Test func workerIs503WithNoLiveWorker() async throws {
        try await withAPI { http, client in
            // A scheduler alone, and a worker that stopped.
            try await self.sql(
                """
                INSERT INTO worker_heartbeats (id, kind, host, pid, version, status) VALUES
                    ('s1', 'scheduler', 'h', 1, 't', 'running'), ('w-old', 'worker', 'h', 2, 't', 'stopped')
                """, client)
            try await http.execute(uri: "/health/worker", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try self.json(response)
                #expect(body["status"] as? String == "fail")
                let alive = try #require(try self.entries(body, "worker:alive").first)
                #expect(alive["observedValue"] as? Int == 0)
                #expect(Set(try self.entries(body, "worker:processes").compactMap { $0["componentId"] as? String }) == ["s1", "w-old"])
            }
        }
    }

    @Test func workerListsEveryProcessWhileOneWorkerIsAlive() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await http.execute(uri: "/health/worker", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                #expect(try self.entries(body, "worker:alive").first?["observedValue"] as? Int == 1)
                let processes = try self.entries(body, "worker:processes")
                #expect(processes.count == 3)
                let worker = try #require(processes.first { $0["componentId"] as? String == "w1" })
                #expect(worker["kind"] as? String == "worker")
                #expect(worker["host"] as? String == "host-a")
                #expect(worker["in_flight"] as? Int == 3)
                #expect(worker["observedValue"] as? String == "alive")
                #expect((worker["age_seconds"] as? Int).map { $0 < 60 } == true)
                #expect((worker["claim_loop_age_seconds"] as? Int).map { $0 < 60 } == true)
                let scheduler = try #require(processes.first { $0["componentId"] as? String == "s1" })
                #expect(scheduler["claim_loop_age_seconds"] is NSNull)
            }
        }
    }

    /// The January incident's cousin: the worker beats, but its claim loop is stuck. It is
    /// not counted, so the endpoint fails.
    /// A sending pause shows as `worker:sending` warn, saying who, why and how to end it; the
    /// endpoint stays 200 (a warning, not a failure) and passes again once it is lifted.
    @Test func aSendingPauseShowsInWorkerHealth() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql("SELECT ops.pause_sending('campanha-7 on hold', interval '1 hour')", client)
            try await http.execute(uri: "/health/worker", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                #expect(body["status"] as? String == "warn")
                let sending = try #require(try self.entries(body, "worker:sending").first)
                #expect(sending["status"] as? String == "warn")
                #expect(sending["observedValue"] as? String == "paused")
                #expect(sending["motivo"] as? String == "campanha-7 on hold")
                #expect((sending["output"] as? String)?.contains("ops.resume_sending") == true)
                #expect(sending["ate"] is String)
            }
            try await self.sql("SELECT ops.resume_sending('released')", client)
            try await http.execute(uri: "/health/worker", method: .get) { response in
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                #expect(try self.entries(body, "worker:sending").first?["observedValue"] as? String == "sending")
            }
        }
    }

    @Test func aWorkerWhoseClaimLoopStalledDoesNotCount() async throws {
        try await withAPI { http, client in
            try await self.sql(
                """
                INSERT INTO worker_heartbeats (id, kind, host, pid, version, claim_loop_at)
                VALUES ('w-stuck', 'worker', 'h', 1, 't', now() - interval '10 minutes')
                """, client)
            try await http.execute(uri: "/health/worker", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try self.json(response)
                #expect(try self.entries(body, "worker:alive").first?["observedValue"] as? Int == 0)
                let stuck = try #require(try self.entries(body, "worker:processes").first)
                #expect(stuck["observedValue"] as? String == "STALLED")
                #expect(stuck["status"] as? String == "warn")
                #expect((stuck["claim_loop_age_seconds"] as? Int).map { $0 >= 600 } == true)
            }
        }
    }

    // MARK: circuits

    @Test func circuitsPassWhenClosedAndFailWhenOpen() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, worker_id, created_at) VALUES
                    ('zapi', 'CLOSED', 'OPEN', '5 failures', 5, 'w1', now() - interval '2 hours'),
                    ('zapi', 'OPEN', 'HALF_OPEN', 'probe', 0, 'w1', now() - interval '119 minutes'),
                    ('zapi', 'HALF_OPEN', 'CLOSED', 'probe passed', 0, 'w1', now() - interval '118 minutes')
                """, client)
            try await http.execute(uri: "/health/circuits", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                let zapi = try #require(try self.entries(body, "circuits:state").first)
                #expect(zapi["componentId"] as? String == "zapi")
                #expect(zapi["observedValue"] as? String == "CLOSED")
            }
            try await self.sql(
                "INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id) VALUES ('evolution', 'CLOSED', 'OPEN', '5 timeouts', 5, 60, 'w1')",
                client)
            try await http.execute(uri: "/health/circuits", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try self.json(response)
                #expect(body["status"] as? String == "fail")
                let states = try self.entries(body, "circuits:state")
                let evolution = try #require(states.first { $0["componentId"] as? String == "evolution" })
                #expect(evolution["observedValue"] as? String == "OPEN")
                #expect(evolution["status"] as? String == "fail")
            }
        }
    }

    @Test func historyReturnsTheWindowAndRefusesBadInput() async throws {
        try await withAPI { http, client in
            try await self.sql(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, worker_id, created_at) VALUES
                    ('evolution', 'CLOSED', 'OPEN', 'recent', 5, 'w1', now() - interval '1 hour'),
                    ('evolution', 'OPEN', 'HALF_OPEN', 'old', 0, 'w1', now() - interval '30 hours'),
                    ('zapi', 'CLOSED', 'OPEN', 'other', 5, 'w1', now() - interval '2 hours')
                """, client)
            try await http.execute(uri: "/health/circuits/history?circuit=evolution&hours=24", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                let transitions = try #require(body["transitions"] as? [[String: Any]])
                #expect(transitions.map { $0["reason"] as? String } == ["recent"])
                #expect(transitions.first?["circuit_name"] as? String == "evolution")
                #expect(transitions.first?["to_state"] as? String == "OPEN")
                #expect(transitions.first?["falhas_consecutivas"] as? Int == 5)
            }
            try await self.sql(
                "INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, worker_id) VALUES ('chip.clinica-1', 'CLOSED', 'OPEN', 'chip', 3, 'w1')",
                client)
            try await http.execute(uri: "/health/circuits/history?circuit=chip.clinica-1", method: .get) { response in
                #expect(response.status == .ok)
                let transitions = try #require(try self.json(response)["transitions"] as? [[String: Any]])
                #expect(transitions.map { $0["circuit_name"] as? String } == ["chip.clinica-1"])
            }
            try await self.sql("DELETE FROM circuit_transitions WHERE circuit_name = 'chip.clinica-1'", client)
            try await http.execute(uri: "/health/circuits/history?hours=48", method: .get) { response in
                let transitions = try #require(try self.json(response)["transitions"] as? [[String: Any]])
                #expect(transitions.map { $0["reason"] as? String } == ["recent", "other", "old"])
            }
            for (query, code) in [("circuit=Evil;DROP", "invalid_circuit"), ("hours=0", "invalid_hours"), ("hours=721", "invalid_hours"), ("hours=abc", "invalid_hours")] {
                try await http.execute(uri: "/health/circuits/history?\(query)", method: .get) { response in
                    #expect(response.status == .badRequest, "\(query)")
                    let error = try #require(try self.json(response)["error"] as? [String: Any])
                    #expect(error["code"] as? String == code, "\(query)")
                    #expect(!(error["message"] as? String ?? "").isEmpty)
                }
            }
        }
    }

    @Test func theDashboardHasTheSeedsShape() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, worker_id, created_at) VALUES
                    ('evolution', 'OPEN', 'CLOSED', 'too old', 0, 'w1', now() - interval '30 hours'),
                    ('evolution', 'CLOSED', 'OPEN', 'opened', 5, 'w1', now() - interval '3 hours'),
                    ('evolution', 'OPEN', 'CLOSED', 'closed', 0, 'w1', now() - interval '2 hours'),
                    ('chip.clinica-1', 'CLOSED', 'OPEN', 'chip down', 3, 'w1', now() - interval '1 hour'),
                    ('chip.clinica-1', 'OPEN', 'CLOSED', 'chip back', 0, 'w1', now() - interval '30 minutes')
                """, client)
            try await http.execute(uri: "/circuits/dashboard", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                let current = try #require(body["current"] as? [String: [String: Any]])
                #expect(current["evolution"]?["state"] as? String == "CLOSED")
                let last24h = try #require(body["last_24h"] as? [String: [[String: Any]]])
                #expect(last24h["evolution"]?.map { $0["reason"] as? String } == ["closed", "opened"])
                // A chip's breaker is a circuit like any other (chip.<id>).
                #expect(last24h["chip.clinica-1"]?.map { $0["reason"] as? String } == ["chip back", "chip down"])
                #expect(body["health_score"] as? Int == 100)
                #expect(body["health_status"] as? String == "healthy")
            }
        }
    }

    // MARK: score and deep

    @Test func scoresAreHealthyWhenAllIsWell() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await http.execute(uri: "/health/score", method: .get) { response in
                #expect(response.status == .ok)
                let body = try self.json(response)
                #expect(body["overall_score"] as? Int == 100)
                #expect(body["status"] as? String == "healthy")
                let components = try #require(body["components"] as? [String: Int])
                #expect(components == ["postgres": 100, "fila": 100, "worker": 100, "scheduler": 100, "circuits": 100])
            }
        }
    }

    /// One provider's circuit open out of two halves `circuits`: degraded, not hidden. No
    /// worker at all makes the whole unhealthy, however well the rest does.
    @Test func scoresDegradeWithAnOpenCircuitAndCollapseWithoutAWorker() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id) VALUES
                    ('evolution', 'CLOSED', 'OPEN', 'down', 5, 60, 'w1'),
                    ('zapi', 'OPEN', 'CLOSED', 'fine', 0, NULL, 'w1')
                """, client)
            try await http.execute(uri: "/health/score", method: .get) { response in
                let body = try self.json(response)
                #expect(body["providers"] as? [String: Int] == ["evolution": 0, "zapi": 100])
                #expect((body["components"] as? [String: Int])?["circuits"] == 50)
                // (100 + 100 + 100 + 100 + 50) / 5
                #expect(body["overall_score"] as? Int == 90)
                #expect(body["status"] as? String == "healthy")
            }
            try await self.sql("UPDATE worker_heartbeats SET status = 'stopped' WHERE id = 'w1'", client)
            try await http.execute(uri: "/health/score", method: .get) { response in
                let body = try self.json(response)
                #expect((body["components"] as? [String: Int])?["worker"] == 0)
                #expect(body["overall_score"] as? Int == 49)
                #expect(body["status"] as? String == "unhealthy")
                #expect((body["bands"] as? [String: String])?["worker"] == "unhealthy")
            }
        }
    }

    @Test func deepPassesWithEverythingAndTheInternals() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await http.execute(uri: "/health/deep", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try self.json(response)
                #expect(body["status"] as? String == "pass")
                let keys = Set((body["checks"] as? [String: Any])?.keys.map { $0 } ?? [])
                #expect(keys == [
                    "postgres:responseTime", "postgres:deadTuples", "postgres:oldestTransaction", "postgres:notificationQueue",
                    "fila:backlog", "worker:alive", "worker:sending", "worker:processes", "circuits:state", "scheduler:alive", "scheduler:lateJobs",
                    "alerts:delivery",
                ])
                let delivery = try #require(try self.entries(body, "alerts:delivery").first)
                #expect(delivery["status"] as? String == "pass")
                #expect(delivery["delivering_processes"] as? Int == 1)
                #expect(try self.entries(body, "postgres:notificationQueue").first?["observedUnit"] as? String == "ratio")
                #expect(try self.entries(body, "postgres:deadTuples").first?["componentId"] as? String == "fila_mensagens")
                #expect(body["overall_score"] as? Int == 100)
            }
        }
    }

    /// Nobody is told: notifications off is a warning, Slack refusing the latest alert a
    /// failure, and neither body holds the reason Slack gave.
    @Test func deepShowsWhetherAlertsReachAnyone() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql("UPDATE worker_heartbeats SET metadata = '{}'", client)
            try await http.execute(uri: "/health/deep", method: .get) { response in
                #expect(response.status == .ok)
                let delivery = try #require(try self.entries(try self.json(response), "alerts:delivery").first)
                #expect(delivery["status"] as? String == "warn")
                #expect((delivery["output"] as? String)?.contains("notifications are off") == true)
            }
            try await self.sql("INSERT INTO alert_state (rule, key) VALUES ('fila_acumulada', '')", client)
            try await self.sql(
                """
                INSERT INTO alert_events (rule, key, kind, title, text, status, attempts, last_error)
                VALUES ('fila_acumulada', '', 'firing', 'Fila acumulada', 't', 'failed', 1, 'HTTP 403 invalid_token')
                """, client)
            try await http.execute(uri: "/health/deep", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let delivery = try #require(try self.entries(try self.json(response), "alerts:delivery").first)
                #expect(delivery["status"] as? String == "fail")
                #expect(delivery["failed_24h"] as? Int == 1)
                #expect(!self.text(response).contains("invalid_token"))
            }
        }
    }

    @Test func deepFailsWithoutAScheduler() async throws {
        try await withAPI { http, client in
            try await self.healthyProcesses(client)
            try await self.sql("DELETE FROM worker_heartbeats WHERE kind = 'scheduler'", client)
            try await http.execute(uri: "/health/deep", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try self.json(response)
                #expect(body["status"] as? String == "fail")
                #expect(try self.entries(body, "scheduler:alive").first?["status"] as? String == "fail")
                #expect((body["output"] as? String)?.contains("scheduler:alive") == true)
            }
        }
    }

    /// A query stuck behind a lock is reported as a failed check, and the endpoint still
    /// answers within 2 s.
    @Test func aHungCheckFailsAndTheEndpointStillAnswersInTime() async throws {
        try await withAPI(productionLimits: true) { http, client in
            try await self.healthyProcesses(client)
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: self.logger)
                try await connection.query("LOCK TABLE fila_mensagens IN ACCESS EXCLUSIVE MODE", logger: self.logger)
                let start = ContinuousClock.now
                try await http.execute(uri: "/health/deep", method: .get) { response in
                    #expect(response.status == .serviceUnavailable)
                    let body = try self.json(response)
                    let backlog = try #require(try self.entries(body, "fila:backlog").first)
                    #expect(backlog["status"] as? String == "fail")
                    #expect(backlog["output"] as? String == "timed out after 1500 ms")
                    // What did not need the locked table still answered.
                    #expect(try self.entries(body, "worker:alive").first?["status"] as? String == "pass")
                }
                // The locked query never ends before the ROLLBACK below: an endpoint that
                // waited for it would never answer. 1.5 s and the rest of the run alone; the
                // margin is for a machine loaded by the whole suite.
                #expect(ContinuousClock.now - start < .seconds(5))
                try await connection.query("ROLLBACK", logger: self.logger)
            }
        }
    }

    /// The history reads a table, not a check: a locked table is a 503 within its 2 s limit.
    @Test func aHungHistoryQueryIs503InTime() async throws {
        try await withAPI(productionLimits: true) { http, client in
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: self.logger)
                try await connection.query("LOCK TABLE circuit_transitions IN ACCESS EXCLUSIVE MODE", logger: self.logger)
                let start = ContinuousClock.now
                try await http.execute(uri: "/health/circuits/history", method: .get) { response in
                    #expect(response.status == .serviceUnavailable)
                    #expect(self.text(response).contains("database_unavailable"))
                }
                // 2 s alone; the margin is for a machine loaded by the whole suite.
                #expect(ContinuousClock.now - start < .seconds(6))
                try await connection.query("ROLLBACK", logger: self.logger)
            }
        }
    }
}
