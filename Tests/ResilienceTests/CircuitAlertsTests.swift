import Database
import FilaTestSupport
import Foundation
import Logging
import Observability
import PostgresNIO
import Primitives
import Resilience
import Testing

private let logger = TestDatabase.logger

/// `circuito_aberto`, from the transition rows a breaker writes (with past timestamps) to
/// the alerts the rule returns.
@Suite("Circuit alert rule", .migratedDatabase, .timeLimit(.minutes(3)))
struct CircuitAlertsTests {
    /// Runs `sql`, one statement at a time (statements end with `;` at the end of a line).
    private func execute(_ client: PostgresClient, _ sql: String) async throws {
        for statement in sql.components(separatedBy: ";\n") where !statement.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            try await client.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
    }

    private func evaluate(_ client: PostgresClient, _ settings: [String: JSONValue] = [:]) async throws -> [Alert] {
        try #require(try await CircuitAlerts.openTooLong(client: client).evaluate(AlertRuleSettings(rule: "circuito_aberto", values: settings), logger))
    }

    /// Two live workers; `w1`'s evolution circuit has been failing its probes for 20 minutes.
    private func cycling(_ client: PostgresClient) async throws {
        try await execute(client, """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, claim_loop_at) VALUES
                ('w1', 'worker', 'a', 1, 't', now()), ('w2', 'worker', 'b', 2, 't', now());
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, open_seconds, worker_id, created_at) VALUES
                ('evolution', 'CLOSED', 'OPEN', '5 falhas: HTTP 502', 60, 'w1', now() - interval '20 minutes'),
                ('evolution', 'OPEN', 'HALF_OPEN', 'probe', NULL, 'w1', now() - interval '19 minutes'),
                ('evolution', 'HALF_OPEN', 'OPEN', 'probe falhou: HTTP 502', 300, 'w1', now() - interval '19 minutes'),
                ('evolution', 'OPEN', 'HALF_OPEN', 'probe', NULL, 'w1', now() - interval '4 minutes'),
                ('evolution', 'HALF_OPEN', 'OPEN', 'probe falhou: HTTP 503', 600, 'w1', now() - interval '4 minutes'),
                ('zapi', 'CLOSED', 'OPEN', '5 falhas', 60, 'w2', now() - interval '30 minutes'),
                ('zapi', 'OPEN', 'HALF_OPEN', 'probe', NULL, 'w2', now() - interval '29 minutes'),
                ('zapi', 'HALF_OPEN', 'CLOSED', 'probe ok', NULL, 'w2', now() - interval '29 minutes');
            """)
    }

    @Test func aCircuitThatKeepsFailingItsProbesFiresPerCircuit() async throws {
        let client = try TestDatabase.current.client
        try await cycling(client)
        let alerts = try await evaluate(client)
        #expect(alerts.map(\.key) == ["evolution"])
        let alert = try #require(alerts.first)
        #expect(alert.rule == "circuito_aberto")
        #expect(alert.title == "Circuito evolution aberto há 20 min")
        #expect(alert.text.contains("probe falhou: HTTP 503"))
        #expect(alert.details["processos"] == .integer(1))
        // The threshold is a setting: 30 minutes is not reached yet.
        #expect(try await evaluate(client, ["after_seconds": 1800]).isEmpty)
    }

    @Test func aCircuitOpenOnlyBrieflyOrIdleSinceDoesNotFire() async throws {
        let client = try TestDatabase.current.client
        try await execute(client, """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, claim_loop_at) VALUES ('w1', 'worker', 'a', 1, 't', now());
            -- Open 3 minutes: below the 10-minute threshold.
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, open_seconds, worker_id, created_at) VALUES
                ('evolution', 'CLOSED', 'OPEN', '5 falhas', 60, 'w1', now() - interval '3 minutes');
            -- Opened an hour ago for 60 s, and no call came since: nothing is failing.
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, open_seconds, worker_id, created_at) VALUES
                ('zapi', 'CLOSED', 'OPEN', '5 falhas', 60, 'w1', now() - interval '1 hour');
            """)
        #expect(try await evaluate(client).isEmpty)
    }

    @Test func aDeadProcessesCircuitDoesNotCount() async throws {
        let client = try TestDatabase.current.client
        try await cycling(client)
        try await execute(client, "UPDATE worker_heartbeats SET last_seen_at = now() - interval '1 hour' WHERE id = 'w1'")
        #expect(try await evaluate(client).isEmpty)
    }

    @Test func aForcedOpenLeftInPlaceFiresNamingWhoAndHowToRelease() async throws {
        let client = try TestDatabase.current.client
        try await execute(client, """
            INSERT INTO circuit_overrides (circuit_name, state, reason, set_by, created_at)
            VALUES ('evolution', 'FORCED_OPEN', 'manutenção da Evolution', 'maria', now() - interval '45 minutes')
            """)
        let alert = try #require(try await evaluate(client).first)
        #expect(alert.key == "evolution")
        #expect(alert.title == "Circuito evolution forçado aberto há 45 min")
        #expect(alert.text.contains("maria"))
        #expect(alert.text.contains("ops.release_circuit('evolution')"))
        try await execute(client, "DELETE FROM circuit_overrides")
        #expect(try await evaluate(client).isEmpty)
    }
}
