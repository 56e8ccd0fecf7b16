-- One rule for "is this process alive", defined here and called by every statement that asks:
-- the rescue of lost workers, the scheduler's judgement of lost job runs and unanswered
-- requests, verificar-heartbeats, the workers_vivos metric, the circuit views and ops.workers.
--
-- A process is alive while its worker_heartbeats row is not 'stopped' and its last beat is
-- younger than the heartbeat timeout. The timeout is app_settings 'heartbeat.timeout_seconds'
-- (a number of seconds, 30 to 86400); unset or out of range, it is 120. Processes beat every
-- 5 s, and a run of beats counts as unbroken while no two are more than 15 s apart, so any
-- timeout must stay well above 15 s: hence the floor of 30.
--
-- Change it with psql; every process follows at its next query:
--   INSERT INTO app_settings (key, value, description)
--   VALUES ('heartbeat.timeout_seconds', '300', 'slow network between workers and the database')
--   ON CONFLICT (key) DO UPDATE SET value = excluded.value;

CREATE FUNCTION fila_heartbeat_timeout() RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs => coalesce(
        (SELECT CASE WHEN jsonb_typeof(s.value) <> 'number' THEN NULL
                     WHEN s.value::numeric BETWEEN 30 AND 86400 THEN s.value::float8 END
           FROM app_settings s
          WHERE s.key = 'heartbeat.timeout_seconds'),
        120))
$$;

COMMENT ON FUNCTION fila_heartbeat_timeout() IS
    'How long a process may go without a heartbeat before it counts as lost: app_settings heartbeat.timeout_seconds (30-86400), else 120 s';

-- The longest a healthy process leaves between two beats (three 5 s intervals). A longer
-- silence means the database was out of reach for it, and its run of beats starts again
-- (worker_heartbeats.beating_since). HeartbeatService.continuityGap is the same value.
CREATE FUNCTION fila_heartbeat_gap() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT interval '15 seconds'
$$;

COMMENT ON FUNCTION fila_heartbeat_gap() IS
    'The longest silence between two heartbeats of a healthy process; a longer one restarts its beating_since';

CREATE FUNCTION fila_process_alive(h worker_heartbeats) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT h.status <> 'stopped' AND h.last_seen_at > now() - fila_heartbeat_timeout()
$$;

COMMENT ON FUNCTION fila_process_alive(worker_heartbeats) IS
    'The liveness rule: not stopped, and a heartbeat within fila_heartbeat_timeout(). SELECT * FROM worker_heartbeats h WHERE fila_process_alive(h);';

-- A stale heartbeat proves a process dead only if the database was reachable all along: after
-- an outage longer than the timeout every heartbeat is stale while the processes are alive.
-- A witness is a live process that has beaten without a gap for a whole timeout (and beat
-- within the last gap, so its run covers now); while there is none, nobody is judged lost.
CREATE FUNCTION fila_process_witness(h worker_heartbeats) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT h.status <> 'stopped'
       AND h.last_seen_at > now() - least(fila_heartbeat_gap(), fila_heartbeat_timeout())
       AND h.beating_since <= now() - fila_heartbeat_timeout()
$$;

COMMENT ON FUNCTION fila_process_witness(worker_heartbeats) IS
    'Whether this process has beaten without a gap for a whole heartbeat timeout: proof that the database was reachable, needed before any process is judged lost';

-- The psql face of the rule: every process with its age and state, lost ones first.
CREATE VIEW ops.workers AS
SELECT h.id, h.kind, h.host, h.pid, h.version, h.status, h.in_flight, h.processed_total,
       h.started_at, h.last_seen_at, now() - h.last_seen_at AS since_heartbeat,
       h.beating_since, fila_process_alive(h) AS alive,
       CASE WHEN h.status = 'stopped' THEN 'stopped'
            WHEN fila_process_alive(h) THEN 'alive'
            ELSE 'LOST' END AS state,
       h.metadata
  FROM worker_heartbeats h
 ORDER BY h.status = 'stopped', h.last_seen_at;

COMMENT ON VIEW ops.workers IS
    'Every fila process and whether it is alive (fila_process_alive): SELECT * FROM ops.workers WHERE state <> ''stopped'';';

-- Same columns and rows as in 0005, with the liveness rule instead of a fixed 2 minutes.
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
 WHERE fila_process_alive(h)
   AND c.circuit_name IS NOT NULL
 ORDER BY t.circuit_name, t.worker_id;

COMMENT ON VIEW ops.circuit_states IS 'Circuit breaker state per live process: SELECT * FROM ops.circuit_states;';
