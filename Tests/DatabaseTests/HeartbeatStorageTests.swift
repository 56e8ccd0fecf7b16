import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Testing

private let logger = TestDatabase.logger

@Suite("Heartbeats do not bloat their table", .migratedDatabase(maximumConnections: 1), .timeLimit(.minutes(3)))
struct HeartbeatStorageTests {
    /// A beat changes no indexed column, so Postgres updates the row in place (HOT): no new
    /// index entries, no dead ones for vacuum, the table stays on one page.
    @Test func everyBeatIsAHotUpdate() async throws {
        // One connection: the beats and the statistics flush below share its backend.
        let client = try TestDatabase.current.client
        let heartbeat = HeartbeatService(
            client: client,
            identity: ProcessIdentity(id: "host:1:ab12", kind: .worker, host: "host", pid: 1, version: "test"),
            stats: ProcessStats(),
            logger: logger
        )
        let beats = 20
        for _ in 0...beats { try await heartbeat.beat() }  // an insert, then the updates
        // The backend publishes its counters before it answers the next statement.
        _ = try await client.query("SELECT pg_stat_force_next_flush()", logger: logger).collect()
        var updates = 0
        var hot = 0
        for _ in 0..<50 {
            (updates, hot) = try await client.query(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'worker_heartbeats'",
                logger: logger
            ).collect().first!.decode((Int, Int).self)
            if updates >= beats { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(updates == beats)
        #expect(hot == beats)
    }
}
