import Database
import FilaTestSupport
import Foundation
import Observability
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// The store against a real Postgres: what `alert_state` and `alert_events` hold after each
/// evaluation, with the passage of time written into the rows.
@Suite("Alert store", .migratedDatabase, .timeLimit(.minutes(2)))
struct AlertStoreTests {
    private let hour = Duration.seconds(3600)

    private func alert(_ rule: String = "fila_acumulada", key: String = "", title: String = "Fila acumulada: 60 mensagens atrasadas") -> Alert {
        Alert(rule: rule, key: key, title: title, text: "60 mensagens pendentes", fields: [.init("Pendentes", "60")], details: ["pendentes": 60])
    }

    private func events(_ client: PostgresClient) async throws -> [(String, String, String, String)] {
        var rows: [(String, String, String, String)] = []
        for try await row in try await client.query("SELECT rule, key, kind, status FROM alert_events ORDER BY id", logger: logger).decode((String, String, String, String).self) {
            rows.append(row)
        }
        return rows
    }

    @Test func firstFiringNotifiesStillFiringWaitsForTheCooldownAndClearingResolvesOnce() async throws {
        let client = try TestDatabase.current.client
        let store = AlertStore(client: client)

        let first = try await store.report(rule: "fila_acumulada", firing: [alert()], cooldown: hour, logger: logger)
        #expect(first.map(\.kind) == [.firing])
        #expect(try await store.report(rule: "fila_acumulada", firing: [alert(title: "Fila acumulada: 70")], cooldown: hour, logger: logger).isEmpty)
        // The latest evaluation's words are kept for ops.alertas even when nobody is told.
        let open = try await client.query("SELECT title, notifications FROM ops.alertas", logger: logger).collect()
        #expect(try open.map { try $0.decode((String, Int).self) }.map(\.0) == ["Fila acumulada: 70"])

        // An hour passes (written into the row): the condition is notified again.
        try await client.query("UPDATE alert_state SET last_notified_at = last_notified_at - interval '61 minutes'", logger: logger)
        let again = try await store.report(rule: "fila_acumulada", firing: [alert()], cooldown: hour, logger: logger)
        #expect(again.map(\.kind) == [.firing])

        let resolved = try await store.report(rule: "fila_acumulada", firing: [], cooldown: hour, logger: logger)
        #expect(resolved.map(\.kind) == [.resolved])
        #expect(resolved.first?.title == "Resolvido: Fila acumulada: 60 mensagens atrasadas")
        #expect(try await store.report(rule: "fila_acumulada", firing: [], cooldown: hour, logger: logger).isEmpty)

        #expect(try await events(client).map { "\($0.0)/\($0.2)/\($0.3)" } == [
            "fila_acumulada/firing/pending", "fila_acumulada/firing/pending", "fila_acumulada/resolved/pending",
        ])
        let state = try await client.query("SELECT firing, notifications, resolved_at IS NOT NULL FROM alert_state", logger: logger).collect()
        #expect(try state.map { try $0.decode((Bool, Int, Bool).self) }.map { "\($0.0) \($0.1) \($0.2)" } == ["false 2 true"])
        #expect(try await client.query("SELECT count(*) FROM ops.alertas", logger: logger).collect().first?.decode(Int.self) == 0)
    }

    @Test func instancesOfARuleAreTrackedByKeyAndOtherRulesAreLeftAlone() async throws {
        let client = try TestDatabase.current.client
        let store = AlertStore(client: client)
        try await store.report(rule: "job_atrasado", firing: [alert("job_atrasado", key: "snapshot-metricas"), alert("job_atrasado", key: "arquivar-fila")], cooldown: hour, logger: logger)
        try await store.report(rule: "fila_acumulada", firing: [alert()], cooldown: hour, logger: logger)
        // One job recovered: only its instance resolves; the backlog rule is untouched.
        let next = try await store.report(rule: "job_atrasado", firing: [alert("job_atrasado", key: "arquivar-fila")], cooldown: hour, logger: logger)
        #expect(next.map { "\($0.key) \($0.kind)" } == ["snapshot-metricas resolved"])
        let open = try await client.query("SELECT rule || '/' || key FROM ops.alertas ORDER BY 1", logger: logger).collect()
        #expect(try open.map { try $0.decode(String.self) } == ["fila_acumulada/", "job_atrasado/arquivar-fila"])
    }

    @Test func twoReportersOnSeparateConnectionsQueueOneNotificationPerCondition() async throws {
        let url = try TestDatabase.current.url
        let client = try TestDatabase.current.client
        try await TestDatabase.withClient(url) { first in
            try await TestDatabase.withClient(url) { second in
                for round in 1...12 {
                    // Each round's evaluation finds one condition more than the last.
                    let conditions = (1...round).map { alert("worker_sem_heartbeat", key: "round-\($0)") }
                    async let a = AlertStore(client: first).report(rule: "worker_sem_heartbeat", firing: conditions, cooldown: hour, logger: logger)
                    async let b = AlertStore(client: second).report(rule: "worker_sem_heartbeat", firing: conditions, cooldown: hour, logger: logger)
                    let (fromA, fromB) = try await (a, b)
                    #expect(fromA.count + fromB.count == 1, "round \(round)")
                }
                // Both find the condition cleared at once: one resolved notification each.
                async let a = AlertStore(client: first).report(rule: "worker_sem_heartbeat", firing: [], cooldown: hour, logger: logger)
                async let b = AlertStore(client: second).report(rule: "worker_sem_heartbeat", firing: [], cooldown: hour, logger: logger)
                let (fromA, fromB) = try await (a, b)
                #expect(fromA.count + fromB.count == 12)
            }
        }
        let counts = try await client.query(
            "SELECT count(*) FILTER (WHERE kind = 'firing'), count(*) FILTER (WHERE kind = 'resolved'), count(DISTINCT (key, kind)) FROM alert_events",
            logger: logger
        ).collect().first?.decode((Int, Int, Int).self)
        #expect(counts.map { "\($0.0) \($0.1) \($0.2)" } == "12 12 24")
    }

    @Test func thresholdsComeFromAppSettingsWithDefaultsForMissingOrInvalidValues() async throws {
        let client = try TestDatabase.current.client
        let store = AlertStore(client: client)
        try await client.query(
            """
            INSERT INTO app_settings (key, value) VALUES
                ('alert.fila_acumulada.cooldown_seconds', '600'),
                ('alert.fila_acumulada.limit', '"muitas"'),
                ('alert.fila_acumuladax.limit', '7')
            """,
            logger: logger
        )
        let settings = try await store.settings(for: "fila_acumulada", logger: logger)
        #expect(settings.cooldown(default: hour) == .seconds(600))
        #expect(settings.integer("limit", default: 50, in: 0...1000) == 50)
        #expect(settings.integer("minutes", default: 30, in: 0...1000) == 30)
    }

    @Test func anInvalidRuleNameIsRefusedBeforeAnythingIsWritten() async throws {
        let client = try TestDatabase.current.client
        await #expect(throws: DatabaseError.self) {
            try await AlertStore(client: client).report(rule: "Fila Acumulada", firing: [], cooldown: hour, logger: logger)
        }
        #expect(try await events(client).isEmpty)
    }

    @Test func opsMarkAFalseAlertWithOneUpdateAndTheRateIsOneQuery() async throws {
        let client = try TestDatabase.current.client
        let store = AlertStore(client: client)
        for _ in 0..<4 {
            try await store.report(rule: "fila_acumulada", firing: [alert()], cooldown: hour, logger: logger)
            try await store.report(rule: "fila_acumulada", firing: [], cooldown: hour, logger: logger)
        }
        try await store.report(rule: "worker_sem_heartbeat", firing: [alert("worker_sem_heartbeat")], cooldown: hour, logger: logger)
        try await client.query(
            "UPDATE alert_events SET false_positive = true WHERE id = (SELECT min(id) FROM alert_events WHERE rule = 'fila_acumulada' AND kind = 'firing')",
            logger: logger
        )
        var rates: [String] = []
        let rows = try await client.query("SELECT coalesce(rule, 'total'), alertas_30d, falsos_30d, taxa_falsos_30d_pct::text FROM ops.alertas_falsos_positivos", logger: logger)
        for try await (rule, total, false_, rate) in rows.decode((String, Int, Int, String).self) {
            rates.append("\(rule) \(total) \(false_) \(rate)")
        }
        #expect(rates == ["fila_acumulada 4 1 25.0", "worker_sem_heartbeat 1 0 0.0", "total 5 1 20.0"])
        let open = try await client.query("SELECT rule, alertas_30d, falsos_30d FROM ops.alertas", logger: logger).collect()
        #expect(try open.map { try $0.decode((String, Int, Int).self) }.map { "\($0.0) \($0.1) \($0.2)" } == ["worker_sem_heartbeat 1 0"])
    }
}
