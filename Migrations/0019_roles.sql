-- 0019_roles: who may do what, as database roles.
--
-- fila_reader     SELECT on the ops views and on Fila's tables: answers ops questions with SQL,
--                 changes nothing
-- fila_operator   a fila_reader that may call every ops function (the audited interventions),
--                 and has no INSERT, UPDATE or DELETE on any table
-- fila_producer   may call fila.enqueue and fila.enqueue_batch, and nothing else
--
-- The ops and fila functions become SECURITY DEFINER: they run with the rights of their owner
-- (the role that migrates, which owns the tables), so an operator changes rows only through
-- them, each checked and audited. session_user, which no function can change, stays the login
-- recorded as who did it. Each runs on a pinned search path ending in pg_temp, so a temporary
-- table cannot stand in for one of Fila's, and none is callable by PUBLIC any more.
--
-- The roles carry statement_timeout, lock_timeout and idle_in_transaction_session_timeout, so a
-- forgotten BEGIN in psql cannot hold the queue's rows. Postgres applies a role's settings to
-- logins as that role only: a person's own login in one of these roles gets the same three
-- lines (RUNBOOK 8 shows the four statements).
--
-- Roles are cluster-wide: they may exist already (another database of the cluster), and a
-- migrating user without CREATEROLE leaves them to a DBA (the NOTICE says what to run), after
-- which SELECT fila_grant_roles(); grants what this migration would have.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['fila_reader', 'fila_operator', 'fila_producer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
                -- Only a role made here is configured here: two databases of one cluster
                -- migrating at once would otherwise update the same role row.
                EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', role_name, '60s');
                EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', role_name, '5s');
                EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', role_name, '60s');
                IF role_name = 'fila_operator' THEN
                    GRANT fila_reader TO fila_operator;
                END IF;
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'role % not created (no CREATEROLE): a DBA runs CREATE ROLE % NOLOGIN (and GRANT fila_reader TO fila_operator), then SELECT fila_grant_roles();',
                        role_name, role_name;
            END;
        END IF;
    END LOOP;
END;
$$;

-- Who changed a setting or a circuit is the login (session_user): inside an ops function,
-- current_user is the functions' owner.
ALTER TABLE app_settings ALTER COLUMN updated_by SET DEFAULT session_user;
ALTER TABLE circuit_overrides ALTER COLUMN set_by SET DEFAULT session_user;

CREATE OR REPLACE FUNCTION app_settings_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.updated_by IS NOT DISTINCT FROM OLD.updated_by THEN
        NEW.updated_by := session_user;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION circuit_overrides_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.expires_at IS NULL OR OLD.expires_at > now() THEN
            INSERT INTO circuit_transitions (circuit_name, from_state, to_state, reason)
            VALUES (OLD.circuit_name, OLD.state, 'CLOSED', 'override released by ' || session_user);
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

-- The circuit overrides, audited in ops_audit as every other intervention (circuit_transitions
-- keeps recording them too).
CREATE OR REPLACE FUNCTION ops.force_circuit(circuit text, state text, reason text, duration interval DEFAULT NULL)
RETURNS circuit_overrides
LANGUAGE plpgsql AS $$
DECLARE
    result circuit_overrides;
BEGIN
    IF circuit IS NULL OR circuit !~ '^[a-z0-9][a-z0-9_.-]{0,99}$' THEN
        RAISE EXCEPTION 'circuit must be a circuit name such as evolution, zapi or chip.<id>, not %', coalesce(circuit, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF state IS NULL OR state NOT IN ('FORCED_OPEN', 'FORCED_CLOSED') THEN
        RAISE EXCEPTION 'state must be FORCED_OPEN or FORCED_CLOSED, not %', coalesce(state, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF duration IS NOT NULL AND duration <= interval '0' THEN
        RAISE EXCEPTION 'duration must be positive, not %', duration USING ERRCODE = '22023';
    END IF;
    IF reason IS NULL OR length(btrim(reason)) = 0 OR length(reason) > 1000 THEN
        RAISE EXCEPTION 'a reason is required (1-1000 characters): say why you force the circuit' USING ERRCODE = '22023';
    END IF;
    INSERT INTO circuit_overrides AS o (circuit_name, state, reason, set_by, expires_at)
    VALUES (circuit, state, reason, session_user, now() + duration)
    ON CONFLICT (circuit_name) DO UPDATE
       SET state = excluded.state, reason = excluded.reason, set_by = excluded.set_by,
           created_at = now(), expires_at = excluded.expires_at
    RETURNING * INTO result;
    PERFORM fila_ops_record('force_circuit',
        jsonb_build_object('circuit', circuit, 'state', state, 'duration', duration::text), btrim(reason), 1);
    RETURN result;
END;
$$;

CREATE OR REPLACE FUNCTION ops.release_circuit(circuit text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    released integer;
BEGIN
    IF circuit IS NULL OR length(btrim(circuit)) = 0 THEN
        RAISE EXCEPTION 'a circuit name is required, e.g. evolution' USING ERRCODE = '22023';
    END IF;
    DELETE FROM circuit_overrides WHERE circuit_name = circuit;
    GET DIAGNOSTICS released = ROW_COUNT;
    PERFORM fila_ops_record('release_circuit', jsonb_build_object('circuit', circuit), NULL, released);
    RETURN released > 0;
END;
$$;

-- pg_temp comes first in a search path that does not name it: a temporary pg_roles would
-- otherwise answer this check.
ALTER FUNCTION fila_may_bypass_guardrails() SET search_path = pg_catalog, pg_temp;

-- Grants, and the functions' security settings, applied from one place. A later migration that
-- adds an ops or fila function, or a table, calls it again (and adds the table to the list);
-- a DBA who creates the roles after migrating calls it once. Returns what it did.
CREATE FUNCTION fila_grant_roles() RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    tables constant text[] := ARRAY[
        'fila_mensagens', 'fila_mensagens_arquivo', 'job_definitions', 'job_executions', 'worker_heartbeats',
        'app_settings', 'app_settings_catalog', 'circuit_transitions', 'circuit_overrides', 'rate_limit_counters',
        'metrics_snapshots', 'alert_events', 'alert_state', 'medico_bloqueios', 'guardrail_bypasses',
        'guardrail_contacts', 'chips', 'chip_events', 'chip_falhas', 'ops_audit', 'schema_migrations'];
    home text;
    path text;
    fn record;
    tbl regclass;
    owner oid;
    reader boolean := to_regrole('fila_reader') IS NOT NULL;
    operator boolean := to_regrole('fila_operator') IS NOT NULL;
    producer boolean := to_regrole('fila_producer') IS NOT NULL;
    secured integer := 0;
BEGIN
    SELECT n.nspname, c.relowner INTO home, owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'fila_mensagens'::regclass;
    path := format('%I, pg_temp', home);
    -- A role that could create a function or operator in a schema on that path could have an
    -- ops function, which runs as the owner, call it: nobody but the owner creates there.
    IF has_schema_privilege('public', home, 'CREATE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', home);
        RAISE NOTICE 'revoked CREATE on schema % from PUBLIC: the ops functions run as its owner, so no other role may create objects there (GRANT CREATE to a role that needs it)', home;
    END IF;
    -- Every function of Fila's that pins a search path: ending it in pg_temp. Those without a
    -- pinned path run on their caller's, which inside an ops function is the pinned one.
    FOR fn IN
        SELECT p.oid::regprocedure AS sig, n.nspname AS schema,
               (SELECT c FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%') AS setting
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN (home, 'ops', 'fila') AND p.proowner = owner
           AND p.prokind = 'f'
    LOOP
        IF fn.schema IN ('ops', 'fila') THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %s', fn.sig, path);
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn.sig);
            -- Adding a chip names an environment variable the workers send to the chip's URL:
            -- that is the owner's to do, or an operator could send any secret anywhere.
            IF fn.schema = 'ops' AND operator AND fn.sig::text NOT LIKE 'ops.add_chip(%' THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO fila_operator', fn.sig);
            ELSIF fn.schema = 'fila' AND producer THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO fila_producer', fn.sig);
            END IF;
            secured := secured + 1;
        ELSIF fn.setting IS NOT NULL AND fn.setting NOT LIKE '%pg_temp' THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = %s', fn.sig,
                CASE WHEN fn.setting = 'search_path=pg_catalog' THEN 'pg_catalog, pg_temp' ELSE path END);
        END IF;
    END LOOP;
    IF reader THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ops TO fila_reader';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA ops TO fila_reader';
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO fila_reader', home);
        FOREACH tbl IN ARRAY ARRAY(SELECT to_regclass(format('%I.%I', home, t)) FROM unnest(tables) t) LOOP
            IF tbl IS NOT NULL THEN
                EXECUTE format('GRANT SELECT ON TABLE %s TO fila_reader', tbl);
            END IF;
        END LOOP;
    END IF;
    IF operator THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ops TO fila_operator';
    END IF;
    IF producer THEN
        EXECUTE 'GRANT USAGE ON SCHEMA fila TO fila_producer';
    END IF;
    IF secured = 0 THEN
        RAISE EXCEPTION 'no ops or fila function was found owned by the owner of fila_mensagens: run this as that role (or a superuser)'
            USING ERRCODE = '42501';
    END IF;
    RETURN format('%s ops/fila functions run as their owner on search_path %s; roles granted: %s', secured, path,
        coalesce(nullif(concat_ws(', ', CASE WHEN reader THEN 'fila_reader' END, CASE WHEN operator THEN 'fila_operator' END,
                                  CASE WHEN producer THEN 'fila_producer' END), ''), 'none (create them first)'));
END;
$$;

COMMENT ON FUNCTION fila_grant_roles() IS
    'Makes every ops/fila function SECURITY DEFINER on a pinned search path, not callable by PUBLIC, and grants fila_reader, fila_operator and fila_producer what they may do (those that exist). Safe to call again';

REVOKE ALL ON FUNCTION fila_grant_roles() FROM PUBLIC;

SELECT fila_grant_roles();
