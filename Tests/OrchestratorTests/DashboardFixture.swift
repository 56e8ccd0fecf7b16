import FilaTestSupport
import Logging
import PostgresNIO

/// A deployment with something in every section of the dashboard (and of `fila status`): a
/// live worker and scheduler, an OPEN circuit and a recovered one with their transitions, a
/// late job beside a healthy one, an open alert, a pause, pending messages due for 12
/// minutes, and 120 messages sent over the last hour.
enum DashboardFixture {
    static let worker = "worker-dash-7"
    static let openCircuit = "evolution"
    static let closedCircuit = "zapi"
    static let lateJob = "relatorio-diario"
    static let okJob = "snapshot-metricas"
    static let sentLastHour = 120
    static let pending = 7
    static let alertTitle = "Fila acumulada: 7 pendentes há 12 min"
    static let pauseMotivo = "campanha-7 em revisão pelo jurídico"

    static func insert(into client: PostgresClient, alertTitle: String = alertTitle, pauseMotivo: String = pauseMotivo, logger: Logger) async throws {
        try await client.query(
            """
            INSERT INTO worker_heartbeats (id, kind, host, pid, version, in_flight, claim_loop_at) VALUES
                (\(worker), 'worker', 'host-a', 11, 't', 2, now() - interval '1 second'),
                ('scheduler-dash-1', 'scheduler', 'host-b', 12, 't', 0, NULL)
            """,
            logger: logger
        )
        try await client.query(
            """
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, falhas_consecutivas, open_seconds, worker_id, created_at) VALUES
                (\(openCircuit), 'CLOSED', 'OPEN', '5 consecutive failures; last: HTTP 503; next probe in 60 s', 5, 60, \(worker), now() - interval '9 minutes'),
                (\(openCircuit), 'OPEN', 'HALF_OPEN', 'reset wait of 60 s passed; admitting 1 probe', 0, NULL, \(worker), now() - interval '8 minutes'),
                (\(openCircuit), 'HALF_OPEN', 'OPEN', 'probe failed: HTTP 503; next probe in 120 s', 1, 120, \(worker), now() - interval '2 minutes'),
                (\(closedCircuit), 'CLOSED', 'OPEN', '5 consecutive failures; last: timed out; next probe in 60 s', 5, 60, \(worker), now() - interval '40 minutes'),
                (\(closedCircuit), 'OPEN', 'HALF_OPEN', 'reset wait of 60 s passed; admitting 1 probe', 0, NULL, \(worker), now() - interval '39 minutes'),
                (\(closedCircuit), 'HALF_OPEN', 'CLOSED', 'probe succeeded', 0, NULL, \(worker), now() - interval '39 minutes')
            """,
            logger: logger
        )
        try await client.query(
            """
            INSERT INTO job_definitions (name, schedule, time_zone, sla_seconds, late_after_seconds, timeout_seconds, created_at) VALUES
                (\(lateJob), 'every 1h', 'America/Sao_Paulo', 60, 7200, 600, now() - interval '3 hours'),
                (\(okJob), 'every 5m', 'America/Sao_Paulo', 30, 600, 120, now() - interval '3 hours')
            """,
            logger: logger
        )
        try await client.query(
            """
            INSERT INTO job_executions (job_name, started_at, finished_at, status, duration_ms) VALUES
                (\(okJob), now() - interval '3 minutes', now() - interval '3 minutes' + interval '420 milliseconds', 'success', 420),
                (\(lateJob), now() - interval '50 minutes', now() - interval '49 minutes', 'failed', 60000)
            """,
            logger: logger
        )
        try await client.query(
            """
            INSERT INTO alert_state (rule, key, firing, first_seen_at, last_seen_at, notifications, title)
            VALUES ('fila_acumulada', '', true, now() - interval '7 minutes', now(), 1, \(alertTitle))
            """,
            logger: logger
        )
        try await client.query("SELECT ops.pause_sending(\(pauseMotivo), interval '2 hours')", logger: logger)
        // Spread over the last 55 minutes: inside the chart's hour whenever it is read.
        try await client.query(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, status, outcome, outcome_at, enviada_em)
            SELECT 'medico-' || i, '5511999990000', 'olá', 'enviada', 'SENT',
                   now() - make_interval(secs => (i * 37) % 3300), now() - make_interval(secs => (i * 37) % 3300)
              FROM generate_series(1, \(sentLastHour)) i
            """,
            logger: logger
        )
        try await client.query(
            """
            INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, agendar_para)
            SELECT 'medico-' || i, '5511999990001', 'oi', now() - interval '12 minutes' FROM generate_series(1, \(pending)) i
            """,
            logger: logger
        )
    }
}
