-- 0004_resilience: circuit breakers' audit log and manual overrides, and the rate limiter's
-- Postgres store.
--
-- circuit_transitions   every state change of every process's breakers (seed T02.1)
-- circuit_overrides     a breaker held open or closed by hand, obeyed by every replica
-- rate_limit_counters   messages' weight spent per doctor per calendar day (seed T04.1)

-- Circuit transitions -------------------------------------------------------------------------

CREATE TABLE circuit_transitions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    circuit_name        text NOT NULL CHECK (circuit_name ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    from_state          text NOT NULL
                        CHECK (from_state IN ('CLOSED', 'OPEN', 'HALF_OPEN', 'FORCED_OPEN', 'FORCED_CLOSED')),
    to_state            text NOT NULL
                        CHECK (to_state IN ('CLOSED', 'OPEN', 'HALF_OPEN', 'FORCED_OPEN', 'FORCED_CLOSED')),
    reason              text NOT NULL,
    falhas_consecutivas integer NOT NULL DEFAULT 0 CHECK (falhas_consecutivas >= 0),
    -- How long an OPEN transition keeps the breaker open before a probe (T02.2's backoff).
    open_seconds        integer CHECK (open_seconds >= 0),
    worker_id           text,
    created_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT circuit_transitions_changes CHECK (from_state <> to_state)
);

COMMENT ON TABLE circuit_transitions IS 'Every state change of a circuit breaker, one row per process that changed (seed T02.1)';
COMMENT ON COLUMN circuit_transitions.reason IS 'Why: the failures that opened it, a probe result, an override, or another process opening it';

-- "What happened to evolution in the last 24 h?" (/health/circuits/history).
CREATE INDEX circuit_transitions_circuit_idx ON circuit_transitions (circuit_name, created_at DESC);
-- Retention and "every transition in the last hour".
CREATE INDEX circuit_transitions_created_idx ON circuit_transitions (created_at);

-- Manual overrides ----------------------------------------------------------------------------

CREATE TABLE circuit_overrides (
    circuit_name text PRIMARY KEY CHECK (circuit_name ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    state        text NOT NULL CHECK (state IN ('FORCED_OPEN', 'FORCED_CLOSED')),
    reason       text NOT NULL CHECK (length(btrim(reason)) > 0),
    set_by       text NOT NULL DEFAULT current_user,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL: until deleted.
    expires_at   timestamptz,

    CONSTRAINT circuit_overrides_expiry CHECK (expires_at IS NULL OR expires_at > created_at)
);

COMMENT ON TABLE circuit_overrides IS 'Breakers held open or closed by hand; every replica obeys within seconds. SELECT ops.force_circuit(...) / ops.release_circuit(...)';

-- Replicas reload the overrides as soon as one changes (and poll in case a notification is lost).
CREATE FUNCTION circuit_overrides_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fila_circuits', json_build_object('kind', 'override')::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER circuit_overrides_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON circuit_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION circuit_overrides_notify();

-- Every manual change is an audit row in circuit_transitions, with no worker_id (each
-- replica then records its own transition too), however it was made: ops.force_circuit,
-- ops.release_circuit, or INSERT/UPDATE/DELETE by hand. An override that expires records
-- nothing here: the replicas record "override lifted".
CREATE FUNCTION circuit_overrides_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.expires_at IS NULL OR OLD.expires_at > now() THEN
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason)
            VALUES (OLD.circuit_name, OLD.state, 'CLOSED', 'override released by ' || current_user);
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state = NEW.state THEN
        -- Same state, new reason or expiry: no transition to record.
        RETURN NEW;
    END IF;
    INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason)
    VALUES (NEW.circuit_name,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.state ELSE 'CLOSED' END,
            NEW.state,
            'override set by ' || NEW.set_by || ': ' || NEW.reason
                || coalesce(' (until ' || NEW.expires_at::text || ')', ''));
    RETURN NEW;
END;
$$;

CREATE TRIGGER circuit_overrides_audit
    AFTER INSERT OR UPDATE OR DELETE ON circuit_overrides
    FOR EACH ROW EXECUTE FUNCTION circuit_overrides_audit();

COMMENT ON COLUMN circuit_transitions.worker_id IS 'The worker_heartbeats.id of the process whose breaker changed; NULL for a manual override (the audit row)';

-- SELECT ops.force_circuit('evolution', 'FORCED_OPEN', 'Evolution maintenance window', interval '2 hours');
CREATE FUNCTION ops.force_circuit(circuit text, state text, reason text, duration interval DEFAULT NULL)
RETURNS circuit_overrides
LANGUAGE plpgsql AS $$
DECLARE
    result circuit_overrides;
BEGIN
    IF state NOT IN ('FORCED_OPEN', 'FORCED_CLOSED') THEN
        RAISE EXCEPTION 'state must be FORCED_OPEN or FORCED_CLOSED, not %', state USING ERRCODE = '22023';
    END IF;
    IF duration IS NOT NULL AND duration <= interval '0' THEN
        RAISE EXCEPTION 'duration must be positive, not %', duration USING ERRCODE = '22023';
    END IF;
    INSERT INTO circuit_overrides AS o (circuit_name, state, reason, expires_at)
    VALUES (circuit, state, reason, now() + duration)
    ON CONFLICT (circuit_name) DO UPDATE
       SET state = excluded.state, reason = excluded.reason, set_by = current_user,
           created_at = now(), expires_at = excluded.expires_at
    RETURNING * INTO result;
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.force_circuit(text, text, text, interval) IS
    'Holds a circuit FORCED_OPEN (no calls) or FORCED_CLOSED (calls even when failing) on every replica, until released or the duration passes';

-- SELECT ops.release_circuit('evolution');
CREATE FUNCTION ops.release_circuit(circuit text) RETURNS boolean
LANGUAGE sql AS $$
    WITH released AS (DELETE FROM circuit_overrides WHERE circuit_name = circuit RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM released);
$$;

COMMENT ON FUNCTION ops.release_circuit(text) IS 'Hands a circuit back to its breakers (CLOSED, counting afresh); false when it had no override';

-- Each live process's breakers as they last changed. A process that never recorded a
-- transition for a circuit has it CLOSED.
CREATE VIEW ops.circuit_states AS
SELECT DISTINCT ON (t.circuit_name, t.worker_id)
       t.circuit_name, t.worker_id, t.to_state AS state, t.reason, t.falhas_consecutivas,
       t.created_at AS since, o.state AS override
  FROM circuit_transitions t
  JOIN worker_heartbeats h ON h.id = t.worker_id
  LEFT JOIN circuit_overrides o ON o.circuit_name = t.circuit_name
       AND (o.expires_at IS NULL OR o.expires_at > now())
 WHERE h.status <> 'stopped' AND h.last_seen_at > now() - interval '2 minutes'
 -- One writer per process inserts its rows in the order they happened: id orders them.
 ORDER BY t.circuit_name, t.worker_id, t.id DESC;

COMMENT ON VIEW ops.circuit_states IS 'Circuit breaker state per live process: SELECT * FROM ops.circuit_states;';

-- Rate limiting -------------------------------------------------------------------------------

CREATE TABLE rate_limit_counters (
    cliente_id text NOT NULL CHECK (length(cliente_id) BETWEEN 1 AND 200),
    -- The calendar day in the limiter's time zone (America/Sao_Paulo by default).
    janela     date NOT NULL,
    usado      integer NOT NULL DEFAULT 0 CHECK (usado >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cliente_id, janela)
)
WITH (fillfactor = 70);

COMMENT ON TABLE rate_limit_counters IS 'Weight of the messages sent to each doctor per day (seed T04.1/T04.2); the store of record when Redis is absent or down';
COMMENT ON COLUMN rate_limit_counters.usado IS 'Sum of the weights (campanha 2, followup 1, sistema 1, resposta 0 by default) admitted in this window';

-- Retention of past windows.
CREATE INDEX rate_limit_counters_janela_idx ON rate_limit_counters (janela);
