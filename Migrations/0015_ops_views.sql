-- 0015_ops_views: the questions ops ask every day, one view each (SELECT * FROM ops.<view>;).
--
-- ops.fila_status       messages by status and tipo, with what is due and how late
-- ops.envios_por_hora   the last 48 hours by hour and outcome
-- ops.erros_recentes    the last 24 hours' failures by outcome and reason, with an example
-- ops.jobs              every periodic job: definition, last run, last success, next run, state
--                       (the same rows GET /jobs and `fila job list` show)
-- ops.job_sla           per job and day over 30 days: runs, failures, runs over the SLA, and
--                       the share that succeeded within it
-- ops.circuits          one row per circuit: the worst state any live process is in, the
--                       override in force, and its last transition
--
-- Joining ops.workers, ops.alertas, ops.chips_uso, ops.circuit_states, ops.medicos_bloqueados
-- and ops.audit from earlier migrations. \dv ops.* lists them, each with its comment.

CREATE VIEW ops.fila_status AS
SELECT m.status, m.tipo,
       count(*) AS mensagens,
       count(*) FILTER (WHERE m.status = 'pendente' AND m.agendar_para <= now()) AS vencidas,
       max(now() - m.agendar_para) FILTER (WHERE m.status = 'pendente' AND m.agendar_para <= now()) AS atraso_maximo,
       min(m.agendar_para) FILTER (WHERE m.status = 'pendente' AND m.agendar_para > now()) AS proxima_agendada,
       max(m.updated_at) AS ultima_mudanca
  FROM fila_mensagens m
 GROUP BY m.status, m.tipo
 ORDER BY array_position(ARRAY['pendente', 'processando', 'enviada', 'erro', 'cancelada'], m.status), m.tipo;

COMMENT ON VIEW ops.fila_status IS
    'Messages in fila_mensagens by status and tipo: how many, how many pending are due, the most overdue, the next scheduled. Reads the whole table (ended rows stay 30 days before the archive). SELECT * FROM ops.fila_status;';

CREATE VIEW ops.envios_por_hora AS
SELECT date_trunc('hour', m.outcome_at) AS hora, m.outcome, count(*) AS mensagens
  FROM fila_mensagens m
 WHERE m.outcome IS NOT NULL
   AND m.outcome_at >= date_trunc('hour', now()) - interval '47 hours'
 GROUP BY 1, 2
 ORDER BY 1 DESC, 3 DESC;

COMMENT ON VIEW ops.envios_por_hora IS
    'The last 48 hours by hour and outcome, as each message''s latest attempt ended (a retried message counts once, at its latest outcome). SELECT * FROM ops.envios_por_hora WHERE outcome = ''SENT'';';

CREATE VIEW ops.erros_recentes AS
SELECT m.outcome, m.outcome_reason_code,
       count(*) AS mensagens,
       count(*) FILTER (WHERE m.status = 'erro') AS em_erro,
       count(*) FILTER (WHERE m.status = 'pendente') AS aguardando_nova_tentativa,
       max(m.outcome_at) AS ultima,
       (array_agg(m.ultimo_erro ORDER BY m.outcome_at DESC) FILTER (WHERE m.ultimo_erro IS NOT NULL))[1] AS ultimo_erro,
       (array_agg(m.id ORDER BY m.outcome_at DESC))[1] AS exemplo_id
  FROM fila_mensagens m
 WHERE m.outcome LIKE 'FAILED\_%'
   AND m.outcome_at > now() - interval '24 hours'
 GROUP BY m.outcome, m.outcome_reason_code
 ORDER BY mensagens DESC, ultima DESC;

COMMENT ON VIEW ops.erros_recentes IS
    'Failures of the last 24 hours by outcome and reason: how many ended in erro, how many wait for another try, the latest error text and an example id. SELECT * FROM ops.erros_recentes;';

CREATE VIEW ops.jobs AS
SELECT d.name, d.schedule, d.time_zone, d.description, d.enabled, d.sla_seconds, d.late_after_seconds, d.next_run_at,
       l.status AS last_status, l.started_at AS last_started_at, l.finished_at AS last_finished_at,
       l.duration_ms AS last_duration_ms, s.last_success AS last_success_at,
       CASE WHEN NOT d.enabled THEN 'disabled'
            WHEN l.status = 'running' AND l.started_at < now() - make_interval(secs => d.sla_seconds) THEN 'running_over_sla'
            WHEN coalesce(s.last_success, d.created_at) < now() - make_interval(secs => d.late_after_seconds) THEN 'late'
            WHEN s.last_success IS NULL THEN 'never_run'
            ELSE 'ok' END AS state
  FROM job_definitions d
  LEFT JOIN LATERAL (SELECT e.status, e.started_at, e.finished_at, e.duration_ms FROM job_executions e
                      WHERE e.job_name = d.name AND e.status <> 'skipped'
                      ORDER BY coalesce(e.started_at, e.created_at) DESC LIMIT 1) l ON true
  LEFT JOIN LATERAL (SELECT max(e.finished_at) AS last_success FROM job_executions e
                      WHERE e.job_name = d.name AND e.status = 'success') s ON true
 ORDER BY d.name;

COMMENT ON VIEW ops.jobs IS
    'Every periodic job with its last run, last success, next run and state (ok, late, running_over_sla, disabled, never_run), as GET /jobs shows them. SELECT * FROM ops.jobs WHERE state <> ''ok'';';

CREATE VIEW ops.job_sla AS
SELECT e.job_name, (e.scheduled_for AT TIME ZONE d.time_zone)::date AS dia,
       count(*) AS execucoes,
       count(*) FILTER (WHERE e.status = 'success') AS sucessos,
       count(*) FILTER (WHERE e.status IN ('failed', 'timeout')) AS falhas,
       count(*) FILTER (WHERE e.duration_ms > d.sla_seconds * 1000::bigint) AS acima_do_sla,
       round(100.0 * count(*) FILTER (WHERE e.status = 'success' AND e.duration_ms <= d.sla_seconds * 1000::bigint) / count(*), 1)
           AS cumprimento_pct
  FROM job_executions e
  JOIN job_definitions d ON d.name = e.job_name
 WHERE e.status IN ('success', 'failed', 'timeout')
   AND e.scheduled_for > now() - interval '30 days'
 GROUP BY e.job_name, 2
 ORDER BY 2 DESC, e.job_name;

COMMENT ON VIEW ops.job_sla IS
    'Per job and day (in the job''s time zone) over 30 days: finished runs, successes, failures, runs over the SLA, and the share that succeeded within the SLA. SELECT * FROM ops.job_sla WHERE cumprimento_pct < 100;';

CREATE VIEW ops.circuits AS
SELECT c.circuit_name,
       CASE WHEN o.state IS NOT NULL THEN o.state
            WHEN bool_or(s.state = 'OPEN') THEN 'OPEN'
            WHEN bool_or(s.state = 'HALF_OPEN') THEN 'HALF_OPEN'
            ELSE 'CLOSED' END AS state,
       o.state AS override, o.reason AS override_reason, o.expires_at AS override_expires_at,
       count(s.worker_id) FILTER (WHERE s.state <> 'CLOSED') AS processes_not_closed,
       last.to_state AS last_to_state, last.reason AS last_reason, last.created_at AS last_change
  FROM (SELECT DISTINCT t.circuit_name FROM circuit_transitions t WHERE t.created_at > now() - interval '90 days'
        UNION SELECT circuit_name FROM circuit_overrides) c
  LEFT JOIN ops.circuit_states s ON s.circuit_name = c.circuit_name
  LEFT JOIN circuit_overrides o ON o.circuit_name = c.circuit_name AND (o.expires_at IS NULL OR o.expires_at > now())
  LEFT JOIN LATERAL (SELECT t.to_state, t.reason, t.created_at FROM circuit_transitions t
                      WHERE t.circuit_name = c.circuit_name
                      ORDER BY t.created_at DESC, t.id DESC LIMIT 1) last ON true
 GROUP BY c.circuit_name, o.state, o.reason, o.expires_at, last.to_state, last.reason, last.created_at
 ORDER BY c.circuit_name;

COMMENT ON VIEW ops.circuits IS
    'One row per circuit: the worst state any live process is in (the override when one is in force), how many processes are not CLOSED, and the last transition. Per process: ops.circuit_states. SELECT * FROM ops.circuits;';
