import Database
import FilaTestSupport
import Logging
import PostgresNIO
import Testing

/// `ops.circuit_states` over a long history: each live process's latest transition per
/// circuit, read without going through the history.
@Suite("ops.circuit_states with a long transitions history", .migratedDatabase, .timeLimit(.minutes(3)))
struct CircuitStatesViewTests {
    let logger = TestDatabase.logger

    @Test func showsEachLiveProcessLatestStateWithoutReadingTheHistory() async throws {
        let url = try TestDatabase.current.url
        try await url.withConnection(logger: logger) { connection in
            // 50,000 transitions of processes long gone, then the live ones' own history.
            try await connection.query(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, worker_id, created_at)
                SELECT (ARRAY['evolution', 'zapi'])[1 + i % 2],
                       CASE WHEN i % 4 < 2 THEN 'CLOSED' ELSE 'OPEN' END,
                       CASE WHEN i % 4 < 2 THEN 'OPEN' ELSE 'CLOSED' END,
                       'history', 'old-host:' || (i % 300) || ':x', now() - interval '80 days' + i * interval '2 minutes'
                  FROM generate_series(1, 50000) i
                """,
                logger: logger
            )
            try await connection.query(
                """
                INSERT INTO worker_heartbeats (id, kind, host, pid, version, status, last_seen_at) VALUES
                    ('host:1:a', 'worker', 'host', 1, 'test', 'running', now()),
                    ('host:2:b', 'worker', 'host', 2, 'test', 'draining', now()),
                    ('host:3:c', 'worker', 'host', 3, 'test', 'stopped', now()),
                    ('host:4:d', 'worker', 'host', 4, 'test', 'running', now() - interval '5 minutes')
                """,
                logger: logger
            )
            try await connection.query(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, worker_id)
                SELECT 'evolution', CASE WHEN i % 2 = 0 THEN 'CLOSED' ELSE 'OPEN' END,
                       CASE WHEN i % 2 = 0 THEN 'OPEN' ELSE 'CLOSED' END, 'flapping', 'host:1:a'
                  FROM generate_series(0, 19999) i
                """,
                logger: logger
            )
            try await connection.query(
                """
                INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, worker_id) VALUES
                    ('zapi', 'CLOSED', 'OPEN', '5 failures', 5, 'host:1:a'),
                    ('evolution', 'CLOSED', 'OPEN', '5 failures', 5, 'host:2:b'),
                    ('evolution', 'OPEN', 'HALF_OPEN', 'probe', 0, 'host:2:b'),
                    ('evolution', 'CLOSED', 'OPEN', 'stopped since', 5, 'host:3:c'),
                    ('zapi', 'CLOSED', 'OPEN', 'silent since', 5, 'host:4:d')
                """,
                logger: logger
            )
            // An override: an audit row without worker_id, and the override column.
            _ = try await connection.query("SELECT ops.force_circuit('zapi', 'FORCED_OPEN', 'maintenance', interval '1 hour')", logger: logger).collect()
            try await connection.query("ANALYZE circuit_transitions", logger: logger)
            try await connection.query("ANALYZE worker_heartbeats", logger: logger)

            var rows: [String] = []
            let query: PostgresQuery = "SELECT circuit_name, worker_id, state, reason, falhas_consecutivas, override FROM ops.circuit_states"
            for try await (circuit, worker, state, reason, failures, override) in try await connection.query(query, logger: logger)
                .decode((String, String, String, String, Int32, String?).self)
            {
                rows.append("\(circuit) \(worker) \(state) \(reason) \(failures) \(override ?? "-")")
            }
            #expect(rows == [
                "evolution host:1:a CLOSED flapping 0 -",
                "evolution host:2:b HALF_OPEN probe 0 -",
                "zapi host:1:a OPEN 5 failures 5 FORCED_OPEN",
            ])

            let plan = try await QueryPlan.explain("SELECT * FROM ops.circuit_states", on: connection, logger: logger)
            #expect(!plan.scans(of: "circuit_transitions").contains("Seq Scan"), "\(plan.json)")
            #expect(plan.buffers < 100, "\(plan.buffers) buffers: \(plan.json)")
        }
    }
}
