-- A heartbeat proves a timer fires; it does not prove the worker is working. A worker whose
-- claim loop is wedged (stuck on a lock, a deadlock in the process) kept beating, so it
-- counted as alive and nobody was told. Each worker now reports, with every beat, when its
-- claim loop last went round, and the liveness rule requires that to be recent as well.
--
-- claim_loop_at is written by the heartbeat as now() minus the age the process measured on
-- its own monotonic clock, so the instant is the database's time, like every other one.
-- An idle or full worker's loop still goes round every poll interval (1 s by default) or 5 s,
-- whichever is shorter, so a fresh claim_loop_at means "ready to claim", not "claimed
-- something".
--
-- A draining worker has stopped claiming on purpose (shutdown), so only its heartbeat counts.
-- It is NULL for processes with no claim loop (api, scheduler, cli), and for workers of a
-- version that does not report it: those are judged by their heartbeat alone, as before, so
-- a rolling upgrade does not make running workers look dead.

ALTER TABLE worker_heartbeats ADD COLUMN claim_loop_at timestamptz;

COMMENT ON COLUMN worker_heartbeats.claim_loop_at IS
    'When this worker''s claim loop last went round (database time); NULL for processes without a claim loop';

CREATE OR REPLACE FUNCTION fila_process_alive(h worker_heartbeats) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT h.status <> 'stopped'
       AND h.last_seen_at > now() - fila_heartbeat_timeout()
       AND (h.claim_loop_at IS NULL OR h.status = 'draining'
            OR h.claim_loop_at > now() - fila_heartbeat_timeout())
$$;

COMMENT ON FUNCTION fila_process_alive(worker_heartbeats) IS
    'The liveness rule: not stopped, a heartbeat within fila_heartbeat_timeout(), and for a worker a claim loop that went round within it too. SELECT * FROM worker_heartbeats h WHERE fila_process_alive(h);';

-- The same view with the claim loop's age, and STALLED for a process that beats while its
-- claim loop does not go round (new columns go last, as CREATE OR REPLACE VIEW requires).
CREATE OR REPLACE VIEW ops.workers AS
SELECT h.id, h.kind, h.host, h.pid, h.version, h.status, h.in_flight, h.processed_total,
       h.started_at, h.last_seen_at, now() - h.last_seen_at AS since_heartbeat,
       h.beating_since, fila_process_alive(h) AS alive,
       CASE WHEN h.status = 'stopped' THEN 'stopped'
            WHEN fila_process_alive(h) THEN 'alive'
            WHEN h.last_seen_at > now() - fila_heartbeat_timeout() THEN 'STALLED'
            ELSE 'LOST' END AS state,
       h.metadata,
       h.claim_loop_at, now() - h.claim_loop_at AS since_claim_loop
  FROM worker_heartbeats h
 ORDER BY h.status = 'stopped', h.last_seen_at;

COMMENT ON VIEW ops.workers IS
    'Every fila process and whether it is alive (fila_process_alive); STALLED: beating, but its claim loop has not gone round within the timeout. SELECT * FROM ops.workers WHERE state <> ''stopped'';';
