-- 0021_worker_statements: the worker's claim and outcome write as functions whose plans are
-- made once per connection.
--
-- Sent as plain statements, the claim was planned anew each time: 0.3-0.5 ms of planning per
-- claim (the priorities' loose index scan, the lateral, eight indexes to weigh), 12-21 µs per
-- message at the default claim sizes, a fifth of Postgres's time for the claim. A prepared
-- statement does not help by itself: the claim's LIMIT is a parameter, so its generic plan's
-- cost is estimated at a tenth of the table and Postgres keeps planning custom plans; and a
-- generic plan that was made while the table was empty (a worker started on an empty queue)
-- seq-scans the table once it is large, until a vacuum or analyze invalidates it (seen with the
-- outcome write: Hash Join over Seq Scan on fila_mensagens, cached, after 100,000 inserts).
--
-- So each statement is a PL/pgSQL function that pins its own plan: plan_cache_mode =
-- force_generic_plan plans it once per connection, and enable_seqscan = off (for its own
-- statements only) makes that one plan the index plan whatever the table's size when it was
-- made: the claim reads the pending index one priority at a time, the outcome write finds each
-- row by primary key. The statements are the ones the worker sent before, word for word.
-- Through a transaction pooler each server connection keeps its own plans: nothing here is
-- tied to the client's session.

CREATE FUNCTION fila_claim(p_worker_id text, p_limit integer)
RETURNS TABLE (id uuid, cliente_id text, telefone text, conteudo text, tipo text, prioridade smallint,
               tentativas integer, max_tentativas integer, correlation_id text, metadata text, claimed_at bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE fila_mensagens m
           SET status = 'processando', processando_desde = now(), worker_id = p_worker_id, updated_at = now()
         WHERE m.id = ANY(ARRAY(
               SELECT due.id
                 FROM fila_mensagens_pending_priorities() p
                CROSS JOIN LATERAL (
                      SELECT f.id FROM fila_mensagens f
                       WHERE f.status = 'pendente' AND f.prioridade = p.prioridade AND f.agendar_para <= now()
                       ORDER BY f.agendar_para, f.id
                       LIMIT p_limit
                         FOR UPDATE SKIP LOCKED) due
                LIMIT p_limit))
        RETURNING m.id, m.cliente_id, m.telefone, m.conteudo, m.tipo, m.prioridade, m.tentativas,
                  m.max_tentativas, coalesce(m.correlation_id, '') AS correlation_id, m.metadata::text AS metadata,
                  (extract(epoch FROM m.processando_desde) * 1000000)::int8 AS claimed_at, m.agendar_para)
    SELECT c.id, c.cliente_id, c.telefone, c.conteudo, c.tipo, c.prioridade, c.tentativas, c.max_tentativas,
           c.correlation_id, c.metadata, c.claimed_at
      FROM claimed c
     ORDER BY c.prioridade DESC, c.agendar_para, c.id;
END;
$$;

COMMENT ON FUNCTION fila_claim(text, integer) IS
    'The worker''s claim: up to p_limit due pendente rows for p_worker_id, highest priority first, then earliest schedule (MessageQueue.claim)';

-- The outcome write: one fenced UPDATE for a batch of attempts, given as parallel arrays (one
-- element per attempt). A row is written only while its claim holds (processando, same worker,
-- same attempt, same claim time); the ids returned are the rows written, the rest were fenced.
-- A failed call made through a chip is counted in chip_falhas, by hour and outcome, in the same
-- call, so the count exists exactly when the outcome does; rows go in one order, so two
-- workers' batches take the counters' row locks alike and cannot deadlock. Batches without one
-- (nearly all) run the UPDATE alone.
CREATE FUNCTION fila_finish(
    p_ids uuid[], p_worker_ids text[], p_tentativas integer[], p_claimed_at bigint[], p_kinds text[],
    p_outcomes text[], p_reasons text[], p_errors text[], p_delays double precision[], p_providers text[],
    p_provider_ids text[], p_chips text[])
RETURNS TABLE (id uuid)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    written uuid[];
    kinds text[];
    outcomes text[];
    chips text[];
BEGIN
    WITH u AS (
        UPDATE fila_mensagens m SET
            status = CASE
                WHEN r.kind = 'sent' THEN 'enviada'
                WHEN r.kind = 'fail' THEN 'erro'
                WHEN r.kind = 'retry' AND m.tentativas + 1 >= m.max_tentativas THEN 'erro'
                ELSE 'pendente' END,
            tentativas = m.tentativas + CASE WHEN r.kind IN ('retry', 'fail') THEN 1 ELSE 0 END,
            agendar_para = CASE WHEN r.kind IN ('retry', 'defer')
                THEN now() + make_interval(secs => r.delay) ELSE m.agendar_para END,
            outcome = r.outcome,
            outcome_reason_code = nullif(r.reason, ''),
            outcome_at = now(),
            ultimo_erro = CASE WHEN r.kind IN ('retry', 'fail') THEN r.error ELSE m.ultimo_erro END,
            enviada_em = CASE WHEN r.kind = 'sent' THEN now() ELSE m.enviada_em END,
            provider = coalesce(nullif(r.provider, ''), m.provider),
            provider_message_id = coalesce(nullif(r.provider_id, ''), m.provider_message_id),
            chip_id = coalesce(nullif(r.chip, ''), m.chip_id),
            worker_id = CASE WHEN r.kind = 'sent' THEN m.worker_id ELSE NULL END,
            processando_desde = CASE WHEN r.kind = 'sent' THEN m.processando_desde ELSE NULL END,
            updated_at = now()
        FROM unnest(p_ids, p_worker_ids, p_tentativas, p_claimed_at, p_kinds, p_outcomes, p_reasons, p_errors,
                    p_delays, p_providers, p_provider_ids, p_chips)
             AS r(id, worker_id, tentativas, claimed_at, kind, outcome, reason, error, delay, provider, provider_id, chip)
        WHERE m.id = r.id
          AND m.status = 'processando'
          AND m.worker_id = r.worker_id
          AND m.tentativas = r.tentativas
          AND (extract(epoch FROM m.processando_desde) * 1000000)::int8 = r.claimed_at
        RETURNING m.id, r.kind, r.outcome, r.chip)
    SELECT array_agg(u.id), array_agg(u.kind), array_agg(u.outcome), array_agg(u.chip)
      INTO written, kinds, outcomes, chips
      FROM u;
    IF written IS NULL THEN
        RETURN;
    END IF;
    -- The rows written, each once, whose call through a chip failed.
    IF EXISTS (SELECT FROM unnest(kinds, chips) AS c(kind, chip) WHERE c.kind IN ('retry', 'fail') AND c.chip <> '') THEN
        INSERT INTO chip_falhas AS x (chip_id, hora, outcome, falhas)
        SELECT c.chip, date_trunc('hour', now()), c.outcome, count(*)
          FROM unnest(kinds, outcomes, chips) AS c(kind, outcome, chip)
         WHERE c.kind IN ('retry', 'fail') AND c.chip <> ''
         GROUP BY c.chip, c.outcome
         ORDER BY c.chip, c.outcome
        ON CONFLICT (chip_id, hora, outcome) DO UPDATE SET falhas = x.falhas + excluded.falhas;
    END IF;
    RETURN QUERY SELECT unnest(written);
END;
$$;

COMMENT ON FUNCTION fila_finish(uuid[], text[], integer[], bigint[], text[], text[], text[], text[], double precision[], text[], text[], text[]) IS
    'The worker''s outcome write: one fenced UPDATE for a batch of attempts; returns the ids written (MessageQueue.finish)';

-- The worker's own, like the table they write: no other role runs them.
REVOKE ALL ON FUNCTION fila_claim(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION fila_finish(uuid[], text[], integer[], bigint[], text[], text[], text[], text[], double precision[], text[], text[], text[]) FROM PUBLIC;

-- Their search path ends in pg_temp, as every pinned path of Fila's does.
SELECT fila_grant_roles();
