import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

/// The one liveness rule (`fila_process_alive`, `fila_process_witness`, migration 0007),
/// judged against rows with past timestamps and the database's now().
@Suite("The process-liveness rule", .migratedDatabase, .timeLimit(.minutes(3)))
struct LivenessRuleTests {
    /// Writes the heartbeats every test judges into the test's database; its client.
    private func insertHeartbeats() async throws -> PostgresClient {
        let client = try TestDatabase.current.client
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, status, last_seen_at, beating_since) VALUES
                ('fresh',    'worker',    'h', 1, 't', 'running',  now(),                        now() - interval '10 minutes'),
                ('three',    'worker',    'h', 2, 't', 'running',  now() - interval '3 minutes', now() - interval '10 minutes'),
                ('stopped',  'worker',    'h', 3, 't', 'stopped',  now(),                        now() - interval '10 minutes'),
                ('young',    'scheduler', 'h', 4, 't', 'running',  now(),                        now() - interval '1 minute'),
                ('gap',      'api',       'h', 5, 't', 'draining', now() - interval '20 seconds', now() - interval '10 minutes')
            """,
            logger: logger
        )
        return client
    }

    private func alive(_ client: PostgresClient) async throws -> Set<String> {
        try await ids("SELECT id FROM worker_heartbeats h WHERE fila_process_alive(h)", client)
    }

    private func ids(_ sql: String, _ client: PostgresClient) async throws -> Set<String> {
        var found: Set<String> = []
        for try await id in try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(String.self) {
            found.insert(id)
        }
        return found
    }

    private func setTimeout(_ json: String, _ client: PostgresClient) async throws {
        try await client.query(
            """
            INSERT INTO app_settings (key, value) VALUES ('heartbeat.timeout_seconds', \(json)::jsonb)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value
            """,
            logger: logger
        )
    }

    @Test func aProcessIsAliveWhileItBeatsWithinTwoMinutesAndHasNotStopped() async throws {
        let client = try await insertHeartbeats()
        #expect(try await alive(client) == ["fresh", "young", "gap"])
        let timeout = try await client.query("SELECT extract(epoch FROM fila_heartbeat_timeout())::int", logger: logger)
            .collect().first?.decode(Int.self)
        #expect(timeout == 120)
    }

    @Test func theTimeoutComesFromAppSettings() async throws {
        let client = try await insertHeartbeats()
        try await setTimeout("300", client)
        #expect(try await alive(client) == ["fresh", "three", "young", "gap"])
        try await setTimeout("30.5", client)
        #expect(try await alive(client) == ["fresh", "young", "gap"])
    }

    /// A value that is not a number of seconds in range, or one below the heartbeat's own
    /// continuity gap, would make live processes look dead: the default applies instead.
    @Test func aTimeoutOutOfRangeFallsBackToTwoMinutes() async throws {
        let client = try await insertHeartbeats()
        for bad in [#""300""#, "5", "0", "-1", "1e400", "86401", "null", "[300]", "true"] {
            try await setTimeout(bad, client)
            let seconds = try await client.query("SELECT extract(epoch FROM fila_heartbeat_timeout())::int", logger: logger)
                .collect().first?.decode(Int.self)
            #expect(seconds == 120, "value \(bad)")
            #expect(try await alive(client) == ["fresh", "young", "gap"], "value \(bad)")
        }
    }

    /// Only a process that has beaten without a gap for a whole timeout vouches that the
    /// database was reachable: not one whose run began a minute ago, not one silent for
    /// longer than the gap, not a stopped one.
    @Test func aWitnessHasBeatenWithoutAGapForTheWholeTimeout() async throws {
        let client = try await insertHeartbeats()
        #expect(try await ids("SELECT id FROM worker_heartbeats h WHERE fila_process_witness(h)", client) == ["fresh"])
        try await setTimeout("45", client)  // now the young scheduler's minute is enough
        #expect(try await ids("SELECT id FROM worker_heartbeats h WHERE fila_process_witness(h)", client) == ["fresh", "young"])
        let gap = try await client.query("SELECT extract(epoch FROM fila_heartbeat_gap())::float8", logger: logger)
            .collect().first?.decode(Double.self)
        #expect(gap == Double(HeartbeatService.continuityGap.components.seconds))
    }

    @Test func opsWorkersShowsEachProcessWithItsState() async throws {
        let client = try await insertHeartbeats()
        var states: [String: String] = [:]
        for try await (id, state) in try await client.query("SELECT id, state FROM ops.workers", logger: logger).decode((String, String).self) {
            states[id] = state
        }
        #expect(states == ["fresh": "alive", "three": "LOST", "stopped": "stopped", "young": "alive", "gap": "alive"])
        // Lost ones first, stopped ones last.
        let first = try await client.query("SELECT id FROM ops.workers LIMIT 1", logger: logger).collect().first?.decode(String.self)
        #expect(first == "three")
    }

    /// Migration 0009: a worker that beats while its claim loop stands still is not alive
    /// (and shows as STALLED), whatever its heartbeat says; a process without a claim loop
    /// (NULL) is judged by its heartbeat alone, as before.
    @Test func aWorkerWhoseClaimLoopStalledIsNotAlive() async throws {
        let client = try TestDatabase.current.client
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, status, last_seen_at, beating_since, claim_loop_at) VALUES
                ('turning',  'worker', 'h', 1, 't', 'running', now(), now() - interval '10 minutes', now() - interval '1 second'),
                ('stalled',  'worker', 'h', 2, 't', 'running', now(), now() - interval '10 minutes', now() - interval '3 minutes'),
                ('all-stuck', 'all',   'h', 3, 't', 'running', now(), now() - interval '10 minutes', now() - interval '130 seconds'),
                ('api',      'api',    'h', 4, 't', 'running', now(), now() - interval '10 minutes', NULL),
                ('old-build', 'worker', 'h', 5, 't', 'running', now(), now() - interval '10 minutes', NULL),
                ('draining', 'worker', 'h', 6, 't', 'draining', now(), now() - interval '10 minutes', now() - interval '3 minutes')
            """,
            logger: logger
        )
        // A draining worker stopped claiming on purpose: its heartbeat alone decides.
        #expect(try await alive(client) == ["turning", "api", "old-build", "draining"])
        var states: [String: String] = [:]
        for try await (id, state) in try await client.query("SELECT id, state FROM ops.workers", logger: logger).decode((String, String).self) {
            states[id] = state
        }
        #expect(states == ["turning": "alive", "stalled": "STALLED", "all-stuck": "STALLED", "api": "alive", "old-build": "alive", "draining": "alive"])
        // The same timeout as the heartbeat's: five minutes forgive the three-minute stall.
        try await setTimeout("300", client)
        #expect(try await alive(client) == ["turning", "stalled", "all-stuck", "api", "old-build", "draining"])
    }
}
