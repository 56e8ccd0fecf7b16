import Logging
import PostgresNIO

/// Questions about live processes, answered by the one liveness rule (`fila_process_alive`).
public enum LiveProcesses {
    /// How many processes of these `worker_heartbeats.kind`s are alive now.
    public static func count(kinds: [ProcessIdentity.Kind], client: PostgresClient, logger: Logger) async throws -> Int {
        try await client.query(
            "SELECT count(*)::int8 FROM worker_heartbeats h WHERE h.kind = ANY(\(kinds.map(\.rawValue))::text[]) AND fila_process_alive(h)",
            logger: logger
        ).collect().first?.decode(Int.self) ?? 0
    }
}
