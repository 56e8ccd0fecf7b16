-- 0005_claim_at_scale: a claim whose cost does not grow with rows scheduled for later, storage
-- and autovacuum settings for the queue's real update pattern, HOT heartbeats, and a circuit
-- view that reads only the rows it shows.
--
-- Figures below were measured on PostgreSQL 15 with 1,000,000 `enviada` rows, 300,000
-- `pendente` rows due in 10 hours and a few due rows (ops/bench prints the claim's figures).

-- Pending priorities ------------------------------------------------------------------------

-- The distinct priorities of pending rows, highest first, by a loose index scan: one descent
-- of fila_mensagens_pendentes_idx per priority, however many rows wait behind each.
--
-- The claim, the backlog check and ops.fila_metricas look up due rows one priority at a time
-- (`prioridade = p AND agendar_para <= now()` is one range of the index, ending at the first
-- row not yet due). Scanning `(prioridade DESC, agendar_para, id)` for `agendar_para <= now()`
-- in one pass instead walks every row scheduled for later whenever fewer rows are due than
-- asked for: 2,400 index pages and 16-20 ms per empty claim with 300,000 rows due tomorrow,
-- against 18-27 pages and 0.6 ms this way. An index led by agendar_para would make the empty
-- claim cheap too, but it must sort every due row to honour the priority order: 56,000
-- buffers and 500-760 ms per 200-row claim with 300,000 rows due, where this shape costs the
-- same as before (about 4,150 buffers, 8.5 ms, nearly all of it the update itself).
--
-- The claim relies on the order: it takes priorities in the order returned here and stops as
-- soon as it has its batch, so a lower priority is never read, nor locked, before a higher
-- one is exhausted. The body is a single SELECT, so the planner inlines it into each caller.
CREATE FUNCTION fila_mensagens_pending_priorities() RETURNS TABLE (prioridade smallint)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE p AS (
        (SELECT f.prioridade FROM fila_mensagens f
          WHERE f.status = 'pendente'
          ORDER BY f.prioridade DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT f.prioridade FROM fila_mensagens f
                 WHERE f.status = 'pendente' AND f.prioridade < p.prioridade
                 ORDER BY f.prioridade DESC LIMIT 1)
          FROM p
         WHERE p.prioridade IS NOT NULL
    )
    SELECT p.prioridade FROM p WHERE p.prioridade IS NOT NULL
$$;

COMMENT ON FUNCTION fila_mensagens_pending_priorities() IS
    'Distinct prioridade of pendente rows, highest first (a loose index scan); the claim reads due rows one priority at a time';

-- "How long has the most overdue due message waited", per priority: the first due row of each
-- priority is the oldest of that priority, so this reads one index entry per priority instead
-- of every pending row (2,408 pages and 20-60 ms before). The other columns are unchanged.
CREATE OR REPLACE VIEW ops.fila_metricas AS
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
    (SELECT coalesce(floor(extract(epoch FROM now() - min(oldest.agendar_para)) / 60), 0)::bigint
       FROM fila_mensagens_pending_priorities() p
      CROSS JOIN LATERAL (
            SELECT f.agendar_para FROM fila_mensagens f
             WHERE f.status = 'pendente' AND f.prioridade = p.prioridade AND f.agendar_para <= now()
             ORDER BY f.agendar_para LIMIT 1) oldest) AS mensagem_mais_antiga_minutos;

-- Storage and autovacuum of the queue ------------------------------------------------------

-- fillfactor 70 reserved room on every page for HOT updates, but no queue update can be HOT:
-- each one changes `status`, which the partial indexes' predicates read, and most change
-- indexed columns too (worker_id, processando_desde, outcome, outcome_at). Measured:
-- n_tup_hot_upd = 0 of 399,512 claim and outcome updates. A non-HOT update goes wherever the
-- free space map finds room, so the reserve only wasted 30% of each page of the month of
-- history that is never updated again: 1,300,000 rows took 48,631 pages (380 MB) at 70 and
-- 33,154 (259 MB) at 100, and claiming and finishing 100,000 rows took 7.5 s at 100 against
-- 8.4 s at 70. Pages written from now on are filled; existing ones keep their layout until
-- rewritten.
--
-- Autovacuum followed the table's size (scale factor 0.02: 200,000 dead rows on a table
-- holding a month of history) rather than its churn. Every claimed row leaves a dead entry at
-- the front of fila_mensagens_pendentes_idx, where every claim starts reading: with 200,000 of
-- them a 1-row claim read 1,900-3,200 buffers, 79 after a VACUUM. A fixed threshold
-- (scale factor 0) bounds them by churn instead: a message leaves about two dead rows (claim,
-- outcome), so 10,000 is a vacuum every ~5,000 messages; with 10,000 dead rows a 1-row claim
-- read 155 buffers, and autovacuum (which now started on its own at 12,000) brought it back to
-- 79. vacuum_index_cleanup = on, because from PostgreSQL 14 a vacuum that finds dead rows
-- on under 2% of the table's pages skips the indexes ("index scan bypassed"), which on this
-- table is every vacuum the small threshold starts: the pending index kept its 10,000 dead
-- entries and a 1-row claim still read 155 buffers instead of 79.
-- Analyze (statistics for the metrics and ops queries) after 50,000 rows changed; a vacuum
-- for inserts alone (visibility map, freezing) after 100,000, so a campaign booked for
-- tomorrow is visible to index-only scans well before it is due.
ALTER TABLE fila_mensagens SET (
    fillfactor = 100,
    vacuum_index_cleanup = on,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 50000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000
);

-- Heartbeats --------------------------------------------------------------------------------

-- Every beat changes last_seen_at, so this index made every beat a non-HOT update: a new entry
-- in both indexes and a dead row version for vacuum, every 5 seconds per process. Nothing needs
-- it: the queries on last_seen_at look a process up by primary key, or read the whole table
-- (one row per process start) anyway. Without it beats are HOT: n_tup_hot_upd was 0 of 1,980
-- updates (20 processes beating 100 times) before and 1,980 of 1,980 after, and the table
-- stayed on 1 page instead of 7.
DROP INDEX worker_heartbeats_last_seen_idx;

-- Circuit states ----------------------------------------------------------------------------

-- The latest transition of each process per circuit: ops.circuit_states reads one entry per
-- live process and circuit instead of the whole table (kept 90 days). Manual audit rows have
-- no worker_id and are never read this way.
CREATE INDEX circuit_transitions_latest_idx
    ON circuit_transitions (worker_id, circuit_name, id DESC)
    WHERE worker_id IS NOT NULL;

-- Same columns and rows as in 0004, read through the index above: the live processes, times
-- the circuit names (a loose index scan of circuit_transitions_circuit_idx), one row each.
-- Before: a parallel seq scan of all 500,000 rows, 6,051 buffers, 138 ms; after: 39, 0.7 ms.
CREATE OR REPLACE VIEW ops.circuit_states AS
WITH RECURSIVE circuits AS (
    (SELECT t.circuit_name FROM circuit_transitions t ORDER BY t.circuit_name LIMIT 1)
    UNION ALL
    SELECT (SELECT t.circuit_name FROM circuit_transitions t
             WHERE t.circuit_name > c.circuit_name
             ORDER BY t.circuit_name LIMIT 1)
      FROM circuits c
     WHERE c.circuit_name IS NOT NULL
)
SELECT t.circuit_name, t.worker_id, t.to_state AS state, t.reason, t.falhas_consecutivas,
       t.created_at AS since, o.state AS override
  FROM worker_heartbeats h
 CROSS JOIN circuits c
 -- One writer per process inserts its rows in the order they happened: id orders them.
 CROSS JOIN LATERAL (
       SELECT * FROM circuit_transitions t
        WHERE t.worker_id = h.id AND t.circuit_name = c.circuit_name
        ORDER BY t.id DESC
        LIMIT 1) t
  LEFT JOIN circuit_overrides o ON o.circuit_name = t.circuit_name
       AND (o.expires_at IS NULL OR o.expires_at > now())
 WHERE h.status <> 'stopped' AND h.last_seen_at > now() - interval '2 minutes'
   AND c.circuit_name IS NOT NULL
 ORDER BY t.circuit_name, t.worker_id;

COMMENT ON VIEW ops.circuit_states IS 'Circuit breaker state per live process: SELECT * FROM ops.circuit_states;';
