#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Observability
import PostgresNIO
import Primitives
import Resilience

/// What `fila status` and `GET /dashboard` show, read once from the `ops` views and the
/// health checks `/health/score` runs.
struct StatusReport: Sendable {
    var score: Int
    var band: HealthScore.Band
    var components: [String: Int]
    var queue: [String: JSONValue]
    var workers: [[String: JSONValue]]
    var circuits: [[String: JSONValue]]
    var jobs: [[String: JSONValue]]
    var alerts: [[String: JSONValue]]
    var pause: [String: JSONValue]?
    /// Messages sent in each of the last 60 minutes, oldest first; the last is the current
    /// minute, so far.
    var sendsPerMinute: [Int]

    /// How many of each circuit's latest transitions the report keeps.
    static let transitionsPerCircuit = 5

    static func read(client: PostgresClient, redisURL: RedisURL?, logger: Logger) async throws -> StatusReport {
        let health = HealthAPI(client: client, redisURL: redisURL, logger: logger)
        let scores = HealthScores(report: await HealthRunner.run(health.allChecks, logger: logger), redisConfigured: redisURL != nil)
        var report = StatusReport(
            score: scores.overall.value, band: scores.overall.band,
            components: scores.components.mapValues { (score: HealthScore) in score.value }, queue: [:], workers: [], circuits: [], jobs: [], alerts: [], pause: nil,
            sendsPerMinute: []
        )
        let queue = try await client.query(
            """
            SELECT m.pendentes::int8, m.processando::int8, m.enviadas_ultima_hora::int8, m.erros_ultima_hora::int8,
                   m.mensagem_mais_antiga_minutos::int8,
                   (SELECT count(*) FROM fila_mensagens f WHERE f.status = 'enviada' AND f.outcome_at > now() - interval '5 minutes')
              FROM ops.fila_metricas m
            """,
            logger: logger
        ).collect().first?.decode((Int, Int, Int, Int, Int, Int).self)
        if let queue {
            report.queue = [
                "pendentes": JSONValue.integer(queue.0), "processando": .integer(queue.1), "enviadas_ultima_hora": .integer(queue.2),
                "erros_ultima_hora": .integer(queue.3), "mensagem_mais_antiga_minutos": .integer(queue.4), "enviadas_5_min": .integer(queue.5),
            ]
        }
        for try await (id, kind, state, inFlight, age, loop) in try await client.query(
            """
            SELECT id, kind, state, in_flight, extract(epoch FROM since_heartbeat)::float8, extract(epoch FROM since_claim_loop)::float8
              FROM ops.workers WHERE state <> 'stopped' ORDER BY kind, id
            """,
            logger: logger
        ).decode((String, String, String, Int32, Double, Double?).self) {
            report.workers.append([
                "id": .string(id), "kind": .string(kind), "state": .string(state), "in_flight": .integer(Int(inFlight)),
                "heartbeat_age_seconds": .integer(Int(age)), "claim_loop_age_seconds": loop.map { .integer(Int($0)) } ?? .null,
            ])
        }
        for try await (name, state, override, overrideReason, notClosed, lastChange) in try await client.query(
            """
            SELECT circuit_name, state, override, override_reason, processes_not_closed::int8, extract(epoch FROM now() - last_change)::float8
              FROM ops.circuits
            """,
            logger: logger
        ).decode((String, String, String?, String?, Int, Double?).self) {
            report.circuits.append([
                "circuit": .string(name), "state": .string(state), "override": override.map(JSONValue.string) ?? .null,
                "override_reason": overrideReason.map(JSONValue.string) ?? .null, "processes_not_closed": .integer(notClosed),
                "last_change_seconds_ago": lastChange.map { .integer(Int($0)) } ?? .null, "transitions": .array([]),
            ])
        }
        // Each circuit's latest transitions, newest first (by every process: each writes its own).
        var transitions: [String: [JSONValue]] = [:]
        for try await (name, from, to, reason, worker, age, at) in try await client.query(
            """
            SELECT c.circuit_name, t.from_state, t.to_state, t.reason, t.worker_id,
                   extract(epoch FROM now() - t.created_at)::float8, t.created_at
              FROM ops.circuits c
             CROSS JOIN LATERAL (SELECT * FROM circuit_transitions t WHERE t.circuit_name = c.circuit_name
                                  ORDER BY t.created_at DESC, t.id DESC LIMIT \(Int32(Self.transitionsPerCircuit))) t
             ORDER BY c.circuit_name, t.created_at DESC, t.id DESC
            """,
            logger: logger
        ).decode((String, String, String, String, String?, Double, Date).self) {
            transitions[name, default: []].append([
                "from_state": .string(from), "to_state": .string(to), "reason": .string(reason),
                "worker_id": worker.map(JSONValue.string) ?? .null, "seconds_ago": .integer(Int(age)), "at": .string(Self.timestamp(at)),
            ])
        }
        for index in report.circuits.indices {
            report.circuits[index]["transitions"] = .array(transitions[report.circuits[index]["circuit"]?.stringValue ?? ""] ?? [])
        }
        // What needs a person first: over its SLA, late, last run failed; then never run.
        for try await (name, state, last, success, sla, duration) in try await client.query(
            """
            SELECT name, state, last_status, extract(epoch FROM now() - last_success_at)::float8, sla_seconds, last_duration_ms::int8
              FROM ops.jobs
             ORDER BY state = 'running_over_sla' DESC, state = 'late' DESC, last_status IN ('failed', 'timeout') DESC,
                      state = 'ok', state = 'never_run', name
            """,
            logger: logger
        ).decode((String, String, String?, Double?, Int32, Int?).self) {
            report.jobs.append([
                "name": .string(name), "state": .string(state), "last_status": last.map(JSONValue.string) ?? .null,
                "last_success_seconds_ago": success.map { .integer(Int($0)) } ?? .null,
                "sla_seconds": .integer(Int(sla)), "last_duration_ms": duration.map { .integer($0) } ?? .null,
            ])
        }
        for try await (rule, key, title, since) in try await client.query(
            "SELECT rule, key, title, extract(epoch FROM firing_for)::float8 FROM ops.alertas", logger: logger
        ).decode((String, String, String, Double).self) {
            report.alerts.append(["rule": .string(rule), "key": .string(key), "title": .string(title), "firing_seconds": .integer(Int(since))])
        }
        for try await (motivo, por, desde, ate, since) in try await client.query(
            """
            SELECT motivo, por, desde, ate, extract(epoch FROM now() - desde)::float8 FROM ops.pausa_envios
            """,
            logger: logger
        ).decode((String, String, Date?, Date?, Double?).self) {
            report.pause = [
                "motivo": .string(motivo), "por": .string(por), "desde": desde.map { .string(Self.timestamp($0)) } ?? .null,
                "ate": ate.map { .string(Self.timestamp($0)) } ?? .null, "paused_seconds": since.map { .integer(Int($0)) } ?? .null,
            ]
        }
        // Zero-filled, minute by minute; the range matches fila_mensagens_outcome_at_idx.
        for try await count in try await client.query(
            """
            WITH sent AS (
                SELECT date_trunc('minute', outcome_at) AS minute, count(*) AS mensagens
                  FROM fila_mensagens
                 WHERE outcome IS NOT NULL AND status = 'enviada'
                   AND outcome_at >= date_trunc('minute', now()) - interval '59 minutes'
                 GROUP BY 1
            )
            SELECT coalesce(s.mensagens, 0)::int8
              FROM generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()), interval '1 minute') AS m(minute)
              LEFT JOIN sent s USING (minute)
             ORDER BY m.minute
            """,
            logger: logger
        ).decode(Int.self) {
            report.sendsPerMinute.append(count)
        }
        // Sending paused by hand, or an alert open: something a person must look at, whatever
        // the score says.
        if report.band == .healthy && (report.pause != nil || !report.alerts.isEmpty) { report.band = .degraded }
        return report
    }

    /// A time as the report writes it: ISO 8601 in UTC, to the second (`2026-12-02T09:23:57Z`).
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }

    func json() -> String {
        let value: JSONValue = [
            "health_status": .string(band.rawValue), "overall_score": .integer(score),
            "components": .object(components.mapValues { .integer($0) }),
            "queue": .object(queue), "workers": .array(workers.map(JSONValue.object)), "circuits": .array(circuits.map(JSONValue.object)),
            "jobs": .array(jobs.map(JSONValue.object)), "alerts": .array(alerts.map(JSONValue.object)),
            "sending_pause": pause.map(JSONValue.object) ?? .null, "sends_per_minute": .array(sendsPerMinute.map(JSONValue.integer)),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    func text(colour: Bool) -> String {
        func paint(_ word: String) -> String {
            guard colour else { return word }
            let code: String
            switch word {
            case "healthy", "alive", "ok", "CLOSED", "sending": code = "32"
            case "degraded", "late", "never_run", "disabled", "HALF_OPEN", "FORCED_CLOSED", "running_over_sla", "paused": code = "33"
            case "unhealthy", "LOST", "STALLED", "OPEN", "FORCED_OPEN": code = "31"
            default: return word
            }
            return "\u{1B}[\(code)m\(word)\u{1B}[0m"
        }
        func int(_ value: JSONValue?) -> String { value?.integerValue.map(String.init) ?? "-" }
        var out = "fila: \(paint(band.rawValue)) (score \(score): "
            + components.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")\n"
        if let pause {
            out += "\nSENDING \(paint("paused")) by \(TerminalText.escaped(pause["por"]?.stringValue ?? "?", limit: 100)) since \(pause["desde"]?.stringValue ?? "?")"
                + (pause["ate"]?.stringValue.map { " until \($0)" } ?? "") + ": \(TerminalText.escaped(pause["motivo"]?.stringValue ?? "", limit: 200))\n"
                + "  SELECT ops.resume_sending('why'); ends it\n"
        }
        out += "\nQUEUE  pending \(int(queue["pendentes"])) (oldest due \(int(queue["mensagem_mais_antiga_minutos"])) min)  processing \(int(queue["processando"]))"
            + "  sent 5 min \(int(queue["enviadas_5_min"])) / 1 h \(int(queue["enviadas_ultima_hora"]))  errors 1 h \(int(queue["erros_ultima_hora"]))\n"
        out += "\nWORKERS\n" + (workers.isEmpty ? "  none alive\n" : Self.indent(table([["ID", "KIND", "STATE", "IN FLIGHT", "BEAT", "LOOP"]] + workers.map { worker in
            [worker["id"]?.stringValue ?? "", worker["kind"]?.stringValue ?? "", paint(worker["state"]?.stringValue ?? ""), int(worker["in_flight"]),
             int(worker["heartbeat_age_seconds"]) + "s", worker["claim_loop_age_seconds"]?.integerValue.map { "\($0)s" } ?? "-"]
        }, cellLimit: 120)))
        out += "\nCIRCUITS\n" + (circuits.isEmpty ? "  none has changed state\n" : Self.indent(table([["CIRCUIT", "STATE", "OVERRIDE"]] + circuits.map { circuit in
            [circuit["circuit"]?.stringValue ?? "", paint(circuit["state"]?.stringValue ?? ""), circuit["override"]?.stringValue ?? "-"]
        }, cellLimit: 120)))
        out += "\nJOBS\n" + (jobs.isEmpty ? "  none registered yet\n" : Self.indent(table([["JOB", "STATE", "LAST", "LAST SUCCESS"]] + jobs.map { job in
            [job["name"]?.stringValue ?? "", paint(job["state"]?.stringValue ?? ""), job["last_status"]?.stringValue ?? "-",
             job["last_success_seconds_ago"]?.integerValue.map { "\($0)s ago" } ?? "never"]
        }, cellLimit: 120)))
        out += "\nALERTS\n" + (alerts.isEmpty ? "  none open\n" : Self.indent(table([["RULE", "KEY", "FIRING", "TITLE"]] + alerts.map { alert in
            [alert["rule"]?.stringValue ?? "", alert["key"]?.stringValue ?? "", int(alert["firing_seconds"]) + "s", alert["title"]?.stringValue ?? ""]
        }, cellLimit: 160)))
        return out
    }

    private static func indent(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.isEmpty ? "" : "  " + $0 }.joined(separator: "\n")
    }
}
