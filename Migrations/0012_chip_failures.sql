-- 0012_chip_failures: a chip's failed attempts, counted where they happen (seed T05.4).
--
-- chip_falhas     failed provider calls per chip, per hour and outcome. The worker adds to it
--                 in the same statement that writes the attempts' outcomes, so the count is
--                 exact whatever happens to the message afterwards (retried through another
--                 chip and sent, say), and a count exists exactly when its outcome does.
-- ops.chips_uso   falhas_hoje / falhas_7d now come from chip_falhas (every failed attempt),
--                 not from the messages' final state (which only saw the last attempt).
--
-- A failed attempt also records its provider and chip on the message (fila_mensagens.provider,
-- chip_id), as a sent one does: the row says where its last attempt went.

CREATE TABLE chip_falhas (
    chip_id  text        NOT NULL,
    -- The hour the attempts failed in (date_trunc('hour', now())): "today" in any time zone
    -- with whole-hour offsets is a sum of whole buckets.
    hora     timestamptz NOT NULL,
    -- FAILED_PROVIDER, FAILED_TIMEOUT or FAILED_VALIDATION, as written on the message.
    outcome  text        NOT NULL,
    falhas   integer     NOT NULL CHECK (falhas > 0),
    PRIMARY KEY (chip_id, hora, outcome)
);

COMMENT ON TABLE chip_falhas IS
    'Failed provider calls per chip, hour and outcome, counted with the outcome write; kept as long as circuit history (job limpar-resiliencia-antiga, 90 days)';

CREATE OR REPLACE VIEW ops.chips_uso AS
SELECT c.id, c.nome, c.provider, c.status, c.is_default,
       coalesce(m.enviadas_hoje, 0) AS enviadas_hoje,
       coalesce(f.falhas_hoje, 0) AS falhas_hoje,
       coalesce(m.enviadas_7d, 0) AS enviadas_7d,
       coalesce(f.falhas_7d, 0) AS falhas_7d,
       c.ultimo_envio_at,
       -- The count of uso_dia (a day in the workers' time zone); a past day means none today.
       c.uso_dia, c.uso_hoje,
       c.limite_diario,
       c.min_intervalo_segundos,
       c.connection_state, c.connection_since, c.connection_checked_at,
       coalesce(b.state, 'CLOSED') AS circuit_state
  FROM chips c
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE s.enviada_em >= date_trunc('day', now())) AS enviadas_hoje,
               count(*) AS enviadas_7d
          FROM fila_mensagens s
         WHERE s.chip_id = c.id AND s.status = 'enviada' AND s.outcome_at >= now() - interval '7 days'
  ) m ON true
  LEFT JOIN LATERAL (
        SELECT sum(x.falhas) FILTER (WHERE x.hora >= date_trunc('day', now())) AS falhas_hoje,
               sum(x.falhas) AS falhas_7d
          FROM chip_falhas x
         WHERE x.chip_id = c.id AND x.hora >= date_trunc('hour', now() - interval '7 days')
  ) f ON true
  LEFT JOIN LATERAL (
        SELECT s.state FROM ops.circuit_states s
         WHERE s.circuit_name = 'chip.' || c.id
         ORDER BY CASE s.state WHEN 'FORCED_OPEN' THEN 0 WHEN 'OPEN' THEN 1 WHEN 'HALF_OPEN' THEN 2 ELSE 3 END
         LIMIT 1
  ) b ON true;

COMMENT ON VIEW ops.chips_uso IS
    'Usage per chip: sends (messages sent through it) and failures (failed calls, chip_falhas) today and in 7 days, last send, today''s count against the limit, connection and breaker state. SELECT * FROM ops.chips_uso;';
