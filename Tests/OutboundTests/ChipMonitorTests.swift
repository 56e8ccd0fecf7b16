import AsyncHTTPClient
import Database
import FilaTestSupport
import Foundation
import Logging
import Observability
import Outbound
import PostgresNIO
import Primitives
import Testing

/// The WhatsApp connection monitor (seed T03.7) against fake Evolution and Z-API servers that
/// follow CONTRACTS.md §1.4 and §2, and a real Postgres.
@Suite(.migratedDatabase, .timeLimit(.minutes(2))) struct ChipMonitorTests {
    let logger = TestDatabase.logger

    func scalar<T: PostgresDecodable & Sendable>(_ client: PostgresClient, _ type: T.Type, _ sql: String) async throws -> T {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().first!.decode(T.self)
    }

    func execute(_ client: PostgresClient, _ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    /// connected → disconnected (not yet for long: no alert) → disconnected past the
    /// threshold: one alert for that chip, not repeated by the next round → reconnected:
    /// resolved. A Z-API chip whose status call times out is `unknown`, with no alert.
    @Test func disconnectionAlertsOncePerChipAndResolvesOnReconnect() async throws {
        let client = try TestDatabase.current.client
        let evolution = try await FakeEvolution.start(apiKey: "key-e", instance: "inst-e")
        let zapi = try await FakeZAPI.start()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer {
            Task {
                try? await http.shutdown()
                await evolution.shutdown()
                await zapi.shutdown()
            }
        }
        try await client.query(
            """
            SELECT ops.add_chip('chip-e', 'Evolution', 'evolution', 'inst-e', 'KEY_E', base_url => \(evolution.baseURL), motivo => 'test');
            """,
            logger: logger
        )
        try await client.query(
            """
            SELECT ops.add_chip('chip-z', 'Z-API', 'zapi', \(zapi.instanceID), 'ZAPI_T', base_url => \(zapi.baseURL),
                                client_token_env => 'ZAPI_C', motivo => 'test');
            """,
            logger: logger
        )
        try await execute(client, "INSERT INTO app_settings (key, value) VALUES ('alert.whatsapp_desconectado.resolve_after_seconds', '0')")
        let environment = ["KEY_E": evolution.apiKey, "ZAPI_T": zapi.token, "ZAPI_C": zapi.clientToken]
        let monitor = ChipConnectionMonitor(
            store: ChipStore(client: client),
            check: ChipConnectionCheck(httpClient: http, environment: environment, timeout: .seconds(20)),
            alerts: AlertStore(client: client)
        )
        // The same with a short time limit, for providers that hold their answer back.
        let impatient = ChipConnectionMonitor(
            store: ChipStore(client: client),
            check: ChipConnectionCheck(httpClient: http, environment: environment, timeout: .milliseconds(500)),
            alerts: AlertStore(client: client)
        )
        func state(_ chip: String) async throws -> String {
            try await scalar(client, String.self, "SELECT connection_state FROM chips WHERE id = '\(chip)'")
        }
        func events(_ kind: String) async throws -> Int {
            try await scalar(client, Int.self, "SELECT count(*)::int8 FROM alert_events WHERE rule = 'whatsapp_desconectado' AND key = 'chip-e' AND kind = '\(kind)'")
        }

        // Connected.
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-e") == "open")
        #expect(try await state("chip-z") == "open")
        #expect(evolution.requests.contains { $0.method == "GET" && $0.path == "/instance/connectionState/inst-e" && $0.header("apikey") == "key-e" })
        #expect(zapi.requests.contains { $0.method == "GET" && $0.path.hasSuffix("/status") && $0.header("Client-Token") == zapi.clientToken })

        // Disconnected, just now: recorded, not yet an alert.
        evolution.connectionState = "close"
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-e") == "close")
        #expect(try await events("firing") == 0)

        // Disconnected for ten minutes (the row says since when): one alert, not repeated.
        try await execute(client, "UPDATE chips SET connection_since = now() - interval '10 minutes' WHERE id = 'chip-e'")
        let result = try await monitor.run(logger: logger)
        #expect(result["firing"] == .array([.string("chip-e")]))
        _ = try await monitor.run(logger: logger)
        #expect(try await events("firing") == 1)
        #expect(try await scalar(client, Bool.self, "SELECT firing FROM alert_state WHERE rule = 'whatsapp_desconectado' AND key = 'chip-e'"))

        // The Z-API chip's provider stops answering in time: unknown, no alert, and a chip
        // already firing whose provider stops answering is not taken as reconnected.
        zapi.latency = .seconds(3)
        evolution.latency = .seconds(3)
        _ = try await impatient.run(logger: logger)
        #expect(try await state("chip-z") == "unknown")
        #expect(try await state("chip-e") == "unknown")
        #expect(try await scalar(client, String.self, "SELECT connection_detail FROM chips WHERE id = 'chip-z'").hasPrefix("no answer"))
        #expect(try await scalar(client, Int.self, "SELECT count(*)::int8 FROM alert_events WHERE key = 'chip-z'") == 0)
        #expect(try await events("resolved") == 0)
        zapi.latency = .zero
        evolution.latency = .zero

        // Still disconnected once the provider answers again: the same episode, still firing,
        // counted from the first time it said so.
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-e") == "close")
        #expect(try await events("resolved") == 0)
        #expect(try await scalar(client, Bool.self, "SELECT firing FROM alert_state WHERE rule = 'whatsapp_desconectado' AND key = 'chip-e'"))
        #expect(try await scalar(client, Bool.self, "SELECT connection_since < now() - interval '9 minutes' FROM chips WHERE id = 'chip-e'"))

        // Reconnected: resolved.
        evolution.connectionState = "open"
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-e") == "open")
        #expect(try await events("resolved") == 1)
        #expect(try await events("firing") == 1)

        // An instance not in Evolution's memory answers without a state: not open (§1.4).
        evolution.connectionState = ""
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-e") == "close")
        // Z-API: connected but the phone is not.
        zapi.statusConnected = (connected: true, smartphoneConnected: false)
        _ = try await monitor.run(logger: logger)
        #expect(try await state("chip-z") == "close")
    }
}
