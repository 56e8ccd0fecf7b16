import Logging
import Observability
import PostgresNIO

/// The queue's gauges, sampled from Postgres at scrape time (never counted per process: many
/// processes share one queue). One statement reads them all.
public enum QueueGauges {
    public static let messages = MetricDescriptor(
        "wa_outbox_messages", .gauge, labels: ["status"],
        help: "Messages in fila_mensagens waiting to be sent (pendente, due or not) and being sent (processando)."
    )
    public static let dueMessages = MetricDescriptor(
        "wa_outbox_due_messages", .gauge,
        help: "Pending messages whose agendar_para has come: the queue depth a worker could claim now."
    )
    public static let oldestAge = MetricDescriptor(
        "wa_outbox_oldest_message_age_seconds", .gauge,
        help: "How long the most overdue pending message has been due (0 when none is due)."
    )
    public static let heartbeatAge = MetricDescriptor(
        "wa_heartbeat_age_seconds", .gauge, labels: ["kind"],
        help: "Seconds since the freshest heartbeat of a process of this kind (worker, scheduler, api, all) not stopped."
    )
    public static let processesAlive = MetricDescriptor(
        "wa_processes_alive", .gauge, labels: ["kind"],
        help: "Processes of this kind that are alive by the liveness rule (fila_process_alive)."
    )
    public static let descriptors = [messages, dueMessages, oldestAge, heartbeatAge, processesAlive]

    /// The process kinds reported, always, so a kind with no process reads 0 alive.
    static let kinds = ["worker", "scheduler", "api", "all"]

    /// Reads every gauge above in one round trip.
    public static func sample(client: PostgresClient, logger: Logger) async throws -> [MetricSample] {
        let rows = try await client.query(
            """
            SELECT 'pendente', count(*)::float8 FROM fila_mensagens WHERE status = 'pendente'
            UNION ALL
            SELECT 'processando', count(*)::float8 FROM fila_mensagens WHERE status = 'processando'
            UNION ALL
            SELECT 'due', count(*)::float8 FROM fila_mensagens WHERE status = 'pendente' AND agendar_para <= now()
            UNION ALL
            SELECT 'oldest', coalesce(extract(epoch FROM now() - min(oldest.agendar_para)), 0)::float8
              FROM fila_mensagens_pending_priorities() p
             CROSS JOIN LATERAL (
                   SELECT f.agendar_para FROM fila_mensagens f
                    WHERE f.status = 'pendente' AND f.prioridade = p.prioridade AND f.agendar_para <= now()
                    ORDER BY f.agendar_para LIMIT 1) oldest
            UNION ALL
            SELECT 'age:' || h.kind, greatest(0, extract(epoch FROM now() - max(h.last_seen_at)))::float8
              FROM worker_heartbeats h WHERE h.status <> 'stopped' AND h.kind <> 'cli' GROUP BY h.kind
            UNION ALL
            SELECT 'alive:' || h.kind, count(*)::float8
              FROM worker_heartbeats h WHERE h.kind <> 'cli' AND fila_process_alive(h) GROUP BY h.kind
            """,
            logger: logger
        ).collect()
        var samples: [MetricSample] = []
        var alive: [String: Double] = [:]
        for row in rows {
            let (key, value) = try row.decode((String, Double).self)
            switch key {
            case "pendente", "processando": samples.append(MetricSample(messages.name, labels: ["status": key], value: value))
            case "due": samples.append(MetricSample(dueMessages.name, value: value))
            case "oldest": samples.append(MetricSample(oldestAge.name, value: value))
            default:
                if key.hasPrefix("age:") {
                    samples.append(MetricSample(heartbeatAge.name, labels: ["kind": String(key.dropFirst(4))], value: value))
                } else if key.hasPrefix("alive:") {
                    alive[String(key.dropFirst(6))] = value
                }
            }
        }
        for kind in kinds {
            samples.append(MetricSample(processesAlive.name, labels: ["kind": kind], value: alive[kind] ?? 0))
        }
        return samples
    }
}
