import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

/// The `ops` views of migration 0015 over rows with past timestamps, read as psql reads them.
@Suite("ops views", .migratedDatabase)
struct OpsViewsTests {
    func rows(_ client: PostgresClient, _ sql: String) async throws -> [String] {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().map { try $0.decode(String.self) }
    }

    @Test func theQueueByStatusByHourAndItsRecentErrors() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        let ids = try await queue.enqueue((1...8).map { message($0, tipo: $0 <= 2 ? .campanha : .resposta) }, logger: logger).map(\.id)
        // 1-2 campanha pending (one 10 min overdue); 3 pending in 2 h; 4-5 sent (now, 3 h ago);
        // 6 erro FAILED_PROVIDER; 7 pending again after a timeout; 8 sent 3 days ago.
        for statement in [
            "UPDATE fila_mensagens SET agendar_para = now() - interval '10 minutes' WHERE id = '\(ids[0])'",
            "UPDATE fila_mensagens SET agendar_para = now() + interval '2 hours' WHERE id = '\(ids[2])'",
            "UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', outcome_at = now(), enviada_em = now() WHERE id = '\(ids[3])'",
            "UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', outcome_at = now() - interval '3 hours', enviada_em = now() - interval '3 hours' WHERE id = '\(ids[4])'",
            "UPDATE fila_mensagens SET status = 'erro', outcome = 'FAILED_PROVIDER', outcome_reason_code = 'evolution:http_500', ultimo_erro = 'HTTP 500', outcome_at = now() - interval '1 hour' WHERE id = '\(ids[5])'",
            "UPDATE fila_mensagens SET outcome = 'FAILED_TIMEOUT', outcome_reason_code = 'evolution:timeout', ultimo_erro = 'no answer in 30 s', outcome_at = now() - interval '2 hours', tentativas = 1 WHERE id = '\(ids[6])'",
            "UPDATE fila_mensagens SET status = 'enviada', outcome = 'SENT', outcome_at = now() - interval '3 days', enviada_em = now() - interval '3 days' WHERE id = '\(ids[7])'",
        ] {
            try await queue.execute(statement)
        }
        let read1 = try await rows(client, "SELECT format('%s %s %s %s %s', status, tipo, mensagens, vencidas, atraso_maximo >= interval '10 minutes') FROM ops.fila_status")
        #expect(read1 == [
            "pendente campanha 2 2 t", "pendente resposta 2 1 f", "enviada resposta 3 0 ", "erro resposta 1 0 ",
        ])
        let read2 = try await rows(client, "SELECT (proxima_agendada > now() + interval '1 hour')::text FROM ops.fila_status WHERE status = 'pendente' AND tipo = 'resposta'")
        #expect(read2 == ["true"])
        // 48 hours only, newest first: the sent row of 3 days ago is not there.
        let read3 = try await rows(client, "SELECT format('%s %s', extract(hour FROM now() - hora)::int, outcome) || ' ' || mensagens FROM ops.envios_por_hora")
        #expect(read3 == [
            "0 SENT 1", "1 FAILED_PROVIDER 1", "2 FAILED_TIMEOUT 1", "3 SENT 1",
        ])
        let read4 = try await rows(client, "SELECT format('%s %s %s %s %s %s', outcome, outcome_reason_code, mensagens, em_erro, aguardando_nova_tentativa, ultimo_erro) FROM ops.erros_recentes")
        #expect(read4 == [
            "FAILED_PROVIDER evolution:http_500 1 1 0 HTTP 500", "FAILED_TIMEOUT evolution:timeout 1 0 1 no answer in 30 s",
        ])
        let read5 = try await rows(client, "SELECT exemplo_id::text FROM ops.erros_recentes WHERE outcome = 'FAILED_PROVIDER'")
        #expect(read5 == [ids[5].uuidString.lowercased()])
    }

    @Test func jobsTheirSLAByDayAndCircuits() async throws {
        let client = try TestDatabase.current.client
        let queue = MessageQueue(client: client)
        for statement in [
            """
            INSERT INTO job_definitions (name, schedule, time_zone, sla_seconds, late_after_seconds, timeout_seconds, created_at) VALUES
                ('diario', 'cron 0 3 * * *', 'UTC', 60, 172800, 300, now() - interval '10 days'),
                ('minuto', 'every 1m', 'UTC', 30, 120, 60, now() - interval '10 days'),
                ('novo', 'every 1h', 'UTC', 30, 7200, 60, now())
            """,
            """
            INSERT INTO job_executions (job_name, scheduled_for, started_at, finished_at, status, duration_ms, triggered_by) VALUES
                ('diario', date_trunc('day', now(), 'UTC') - interval '1 day', date_trunc('day', now(), 'UTC') - interval '1 day', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '10 seconds', 'success', 10000, 'scheduler'),
                ('minuto', date_trunc('day', now(), 'UTC') - interval '1 day', date_trunc('day', now(), 'UTC') - interval '1 day', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '5 seconds', 'success', 5000, 'scheduler'),
                ('minuto', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '1 minute', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '1 minute', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '2 minutes', 'success', 60000, 'scheduler'),
                ('minuto', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '2 minutes', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '2 minutes', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '3 minutes', 'failed', 1000, 'scheduler'),
                ('minuto', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '3 minutes', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '3 minutes', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '4 minutes', 'success', 1000, 'scheduler')
            """,
        ] {
            try await queue.execute(statement)
        }
        // diario succeeded a day ago (late after 2 days); minuto's last success is a day old.
        let read6 = try await rows(client, "SELECT name || ' ' || state || ' ' || coalesce(last_status, '-') FROM ops.jobs")
        #expect(read6 == [
            "diario ok success", "minuto late success", "novo never_run -",
        ])
        let read7 = try await rows(client, "SELECT format('%s %s %s %s %s %s', job_name, dia = (now() AT TIME ZONE 'UTC')::date - 1, execucoes, sucessos, falhas, acima_do_sla) || ' ' || cumprimento_pct FROM ops.job_sla")
        #expect(read7 == [
            "diario t 1 1 0 0 100.0", "minuto t 4 3 1 1 50.0",
        ])

        try await queue.registerWorker("w1")
        try await queue.registerWorker("w2")
        for statement in [
            """
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason, worker_id, created_at) VALUES
                ('evolution', 'CLOSED', 'OPEN', '5 failures', 'w1', now() - interval '2 minutes'),
                ('evolution', 'CLOSED', 'OPEN', 'followed w1', 'w2', now() - interval '1 minute'),
                ('evolution', 'OPEN', 'HALF_OPEN', 'probe', 'w2', now() - interval '30 seconds'),
                ('zapi', 'CLOSED', 'OPEN', 'old', 'gone', now() - interval '1 day')
            """,
            "INSERT INTO circuit_overrides (circuit_name, state, reason) VALUES ('chip.clinica-1', 'FORCED_OPEN', 'number banned')",
        ] {
            try await queue.execute(statement)
        }
        // zapi's only process is gone: no live process says it is open. The override is a
        // transition of its own.
        let read8 = try await rows(client, "SELECT format('%s %s %s %s', circuit_name, state, processes_not_closed, coalesce(last_to_state, '-')) FROM ops.circuits")
        #expect(read8 == [
            "chip.clinica-1 FORCED_OPEN 0 FORCED_OPEN", "evolution OPEN 2 HALF_OPEN", "zapi CLOSED 0 OPEN",
        ])
        // The views say what they are.
        let read9 = try await rows(client, """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'ops' AND c.relkind = 'v' AND obj_description(c.oid, 'pg_class') IS NULL
            """)
        #expect(read9 == [])
    }
}
