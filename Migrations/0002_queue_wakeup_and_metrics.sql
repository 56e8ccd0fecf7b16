-- 0002_queue_wakeup_and_metrics: wake idle workers on insert; queue metrics as a view.

-- One NOTIFY per inserting statement, never per row: a NOTIFY takes a global lock at
-- commit, so a 10,000-row batch must cost one notification, not 10,000. Workers also
-- poll on a slow interval, so a lost notification only delays, never strands, a message.
CREATE FUNCTION fila_mensagens_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fila_mensagens', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER fila_mensagens_notify
    AFTER INSERT ON fila_mensagens
    FOR EACH STATEMENT EXECUTE FUNCTION fila_mensagens_notify();

-- The seed's queue metrics (T01.4), one row, in one query:
--   pendentes                      rows waiting (due now or scheduled later)
--   processando                    rows held by a worker
--   enviadas_ultima_hora           rows sent in the last hour
--   erros_ultima_hora              rows whose latest attempt failed in the last hour, retried
--                                  or final: provider, timeout, validation, stuck, expired.
--                                  Deferrals (rate limit, open circuit, no chip), guardrail
--                                  blocks and hand-backs of a stopped or lost worker are not
--                                  errors and are not counted.
--   tempo_medio_processamento_ms   mean claim-to-sent time of the last hour's sends
--   mensagem_mais_antiga_minutos   how long the most overdue due message has waited
CREATE VIEW ops.fila_metricas AS
SELECT
    (SELECT count(*) FROM fila_mensagens WHERE status = 'pendente') AS pendentes,
    (SELECT count(*) FROM fila_mensagens WHERE status = 'processando') AS processando,
    (SELECT count(*) FROM fila_mensagens
      WHERE outcome IS NOT NULL AND outcome_at > now() - interval '1 hour'
        AND status = 'enviada') AS enviadas_ultima_hora,
    (SELECT count(*) FROM fila_mensagens
      WHERE outcome IS NOT NULL AND outcome_at > now() - interval '1 hour'
        AND outcome IN ('FAILED_PROVIDER', 'FAILED_TIMEOUT', 'FAILED_VALIDATION',
                        'FAILED_STUCK', 'FAILED_EXPIRED')) AS erros_ultima_hora,
    (SELECT round(avg(extract(epoch FROM outcome_at - processando_desde) * 1000))::bigint
       FROM fila_mensagens
      WHERE outcome IS NOT NULL AND outcome_at > now() - interval '1 hour'
        AND status = 'enviada') AS tempo_medio_processamento_ms,
    (SELECT coalesce(floor(extract(epoch FROM now() - min(agendar_para)) / 60), 0)::bigint
       FROM fila_mensagens
      WHERE status = 'pendente' AND agendar_para <= now()) AS mensagem_mais_antiga_minutos;

COMMENT ON VIEW ops.fila_metricas IS 'Queue metrics (seed T01.4): SELECT * FROM ops.fila_metricas;';
