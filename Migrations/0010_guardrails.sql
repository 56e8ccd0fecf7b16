-- 0010_guardrails: the checks that stop a message before it spends anything (seed T06).
--
-- medico_bloqueios        doctors blocked from every message, one row per block, history kept
--                         (ops.block_medico / ops.unblock_medico, POST /admin/medicos/{id}/unblock)
-- guardrail_contacts      the campaign contacts contact_cap_7d counts, one row per message (T06.1)
-- guardrail_bypasses      every guardrail a message was let past: who, when, why (T06.2)
-- fila_mensagens.guardrail_bypass_*
--                         a message's bypass; only members of the role fila_guardrail_bypass
--                         (or superusers) can set it, and the database stamps who did
--
-- Per message the worker calls fila_guardrails_check() before anything else (rate limit,
-- chip, breaker, provider): a message it refuses ends FAILED_GUARDRAIL and spends no budget.

-- Who may set a bypass ------------------------------------------------------------------------

-- A role is the one identity every producer path shares: psql, SQL inserts from another
-- service, `fila enqueue` (which connects with its DATABASE_URL). Producers get INSERT on
-- fila_mensagens; only the roles granted fila_guardrail_bypass may put a bypass on a row.
-- Roles are cluster-wide: the role may exist already (another database of the cluster), and a
-- migrating user without CREATEROLE leaves the bypass to superusers until a DBA creates it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fila_guardrail_bypass') THEN
        CREATE ROLE fila_guardrail_bypass NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'role fila_guardrail_bypass not created (no CREATEROLE): only superusers can set a guardrail bypass until it exists (CREATE ROLE fila_guardrail_bypass NOLOGIN)';
END;
$$;

-- Doctor blocks -------------------------------------------------------------------------------

CREATE TABLE medico_bloqueios (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cliente_id     text NOT NULL CHECK (length(cliente_id) BETWEEN 1 AND 200),
    motivo         text NOT NULL CHECK (length(btrim(motivo)) BETWEEN 1 AND 1000),
    blocked_at     timestamptz NOT NULL DEFAULT now(),
    blocked_by     text NOT NULL DEFAULT session_user,
    unblocked_at   timestamptz,
    unblocked_by   text,
    unblock_motivo text CHECK (length(btrim(unblock_motivo)) BETWEEN 1 AND 1000),

    -- An unblock says when, by whom and why, all three or none.
    CONSTRAINT medico_bloqueios_unblock_completo CHECK (
        (unblocked_at IS NULL) = (unblocked_by IS NULL) AND (unblocked_at IS NULL) = (unblock_motivo IS NULL)),
    CONSTRAINT medico_bloqueios_ordem CHECK (unblocked_at IS NULL OR unblocked_at >= blocked_at)
);

COMMENT ON TABLE medico_bloqueios IS
    'Doctors who receive no message at all (FAILED_GUARDRAIL, guardrail:blocked); a row is open while unblocked_at IS NULL, and stays as history after. SELECT ops.block_medico(...) / ops.unblock_medico(...)';
COMMENT ON COLUMN medico_bloqueios.blocked_by IS 'The database login that blocked (session_user)';
COMMENT ON COLUMN medico_bloqueios.unblocked_by IS 'The database login that unblocked (session_user), or ''admin-token[:name]'' through the HTTP API';

-- One open block per doctor; the worker's check reads it by cliente_id.
CREATE UNIQUE INDEX medico_bloqueios_aberto_idx ON medico_bloqueios (cliente_id) WHERE unblocked_at IS NULL;
CREATE INDEX medico_bloqueios_historico_idx ON medico_bloqueios (cliente_id, blocked_at DESC);

-- The rule, written once: ops.block_medico (psql) and nothing else call it with a login.
CREATE FUNCTION fila_medico_block(p_cliente_id text, p_motivo text, p_by text) RETURNS medico_bloqueios
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    existing medico_bloqueios;
    result medico_bloqueios;
BEGIN
    IF p_cliente_id IS NULL OR length(btrim(p_cliente_id)) = 0 OR length(p_cliente_id) > 200 THEN
        RAISE EXCEPTION 'cliente_id is required (1-200 characters), e.g. ''medico-42''' USING ERRCODE = '22023';
    END IF;
    IF p_motivo IS NULL OR length(btrim(p_motivo)) = 0 OR length(btrim(p_motivo)) > 1000 THEN
        RAISE EXCEPTION 'a motivo is required (1-1000 characters): say why % is blocked', p_cliente_id USING ERRCODE = '22023';
    END IF;
    SELECT * INTO existing FROM medico_bloqueios WHERE cliente_id = p_cliente_id AND unblocked_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION '% is already blocked (since %, by %: %)', p_cliente_id, existing.blocked_at, existing.blocked_by, existing.motivo
            USING ERRCODE = '22023', HINT = 'unblock first (ops.unblock_medico) to block again with another motivo';
    END IF;
    INSERT INTO medico_bloqueios (cliente_id, motivo, blocked_by)
    VALUES (p_cliente_id, btrim(p_motivo), p_by)
    RETURNING * INTO result;
    RETURN result;
END;
$$;

COMMENT ON FUNCTION fila_medico_block(text, text, text) IS
    'Blocks a doctor on behalf of p_by; refuses a blank cliente_id or motivo, or a doctor already blocked (SQLSTATE 22023). Use ops.block_medico from psql';

CREATE FUNCTION fila_medico_unblock(p_cliente_id text, p_motivo text, p_by text) RETURNS medico_bloqueios
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    result medico_bloqueios;
BEGIN
    IF p_cliente_id IS NULL OR length(btrim(p_cliente_id)) = 0 OR length(p_cliente_id) > 200 THEN
        RAISE EXCEPTION 'cliente_id is required (1-200 characters), e.g. ''medico-42''' USING ERRCODE = '22023';
    END IF;
    IF p_motivo IS NULL OR length(btrim(p_motivo)) = 0 OR length(btrim(p_motivo)) > 1000 THEN
        RAISE EXCEPTION 'a motivo is required (1-1000 characters): say why % is unblocked', p_cliente_id USING ERRCODE = '22023';
    END IF;
    IF p_by IS NULL OR length(btrim(p_by)) = 0 THEN
        RAISE EXCEPTION 'who unblocks is required' USING ERRCODE = '22023';
    END IF;
    UPDATE medico_bloqueios
       SET unblocked_at = greatest(now(), blocked_at), unblocked_by = p_by, unblock_motivo = btrim(p_motivo)
     WHERE cliente_id = p_cliente_id AND unblocked_at IS NULL
    RETURNING * INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not blocked', p_cliente_id
            USING ERRCODE = 'P0002', HINT = 'SELECT * FROM ops.medicos_bloqueados; lists the doctors blocked now';
    END IF;
    RETURN result;
END;
$$;

COMMENT ON FUNCTION fila_medico_unblock(text, text, text) IS
    'Ends a doctor''s open block on behalf of p_by, keeping the row as history; SQLSTATE 22023 for a blank argument, P0002 when the doctor is not blocked. Used by ops.unblock_medico and POST /admin/medicos/{cliente_id}/unblock';

-- SELECT ops.block_medico('medico-42', 'pediu para não receber mensagens');
CREATE FUNCTION ops.block_medico(cliente_id text, motivo text) RETURNS medico_bloqueios
LANGUAGE sql SECURITY INVOKER SET search_path FROM CURRENT AS $$
    SELECT * FROM fila_medico_block($1, $2, session_user::text);
$$;

COMMENT ON FUNCTION ops.block_medico(text, text) IS
    'Blocks a doctor from every message (they end FAILED_GUARDRAIL, guardrail:blocked), recording the login and the motivo';

-- SELECT ops.unblock_medico('medico-42', 'confirmou que quer voltar a receber');
CREATE FUNCTION ops.unblock_medico(cliente_id text, motivo text) RETURNS medico_bloqueios
LANGUAGE sql SECURITY INVOKER SET search_path FROM CURRENT AS $$
    SELECT * FROM fila_medico_unblock($1, $2, session_user::text);
$$;

COMMENT ON FUNCTION ops.unblock_medico(text, text) IS
    'Unblocks a doctor, recording the login and the motivo; the block stays in medico_bloqueios as history. Messages already failed stay failed';

CREATE VIEW ops.medicos_bloqueados AS
SELECT b.cliente_id, b.motivo, b.blocked_at, b.blocked_by, now() - b.blocked_at AS blocked_for,
       (SELECT count(*) FROM medico_bloqueios h WHERE h.cliente_id = b.cliente_id) AS bloqueios_total
  FROM medico_bloqueios b
 WHERE b.unblocked_at IS NULL
 ORDER BY b.blocked_at;

COMMENT ON VIEW ops.medicos_bloqueados IS
    'Doctors blocked now, with how many times each was ever blocked: SELECT * FROM ops.medicos_bloqueados;';

-- Contact cap -------------------------------------------------------------------------------

-- One row per campaign message admitted by the check: contact_cap_7d counts a doctor's rows of
-- the last 7 days (by the database's clock). A row is taken under a per-doctor transaction
-- lock before the send and given back when the message surely did not go out, so workers on
-- any number of machines never admit more than the cap.
CREATE TABLE guardrail_contacts (
    mensagem_id  uuid PRIMARY KEY,
    cliente_id   text NOT NULL CHECK (length(cliente_id) BETWEEN 1 AND 200),
    contacted_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE guardrail_contacts IS
    'Campaign contacts per doctor, one row per message admitted (seed T06.1); contact_cap_7d counts the last 7 days. Kept 8 days';

CREATE INDEX guardrail_contacts_cliente_idx ON guardrail_contacts (cliente_id, contacted_at);

-- The campaigns already sent count from the start (through the recent-outcomes index).
INSERT INTO guardrail_contacts (mensagem_id, cliente_id, contacted_at)
SELECT id, cliente_id, enviada_em
  FROM fila_mensagens
 WHERE outcome IS NOT NULL AND outcome_at > now() - interval '7 days'
   AND status = 'enviada' AND tipo = 'campanha';

-- Bypass --------------------------------------------------------------------------------------

ALTER TABLE fila_mensagens
    ADD COLUMN guardrail_bypass_motivo text CHECK (length(btrim(guardrail_bypass_motivo)) BETWEEN 1 AND 1000),
    ADD COLUMN guardrail_bypass_por text,
    ADD COLUMN guardrail_bypass_em timestamptz;

-- Every existing row has all three NULL: NOT VALID skips a scan of the queue under this
-- migration's lock; new and updated rows are checked.
ALTER TABLE fila_mensagens ADD CONSTRAINT fila_mensagens_bypass_completo CHECK (
    (guardrail_bypass_motivo IS NULL) = (guardrail_bypass_por IS NULL)
    AND (guardrail_bypass_motivo IS NULL) = (guardrail_bypass_em IS NULL)) NOT VALID;

-- The archive keeps every column of the queue (BuiltinJobs.archivedColumns lists them).
ALTER TABLE fila_mensagens_arquivo
    ADD COLUMN guardrail_bypass_motivo text,
    ADD COLUMN guardrail_bypass_por text,
    ADD COLUMN guardrail_bypass_em timestamptz;

COMMENT ON COLUMN fila_mensagens.guardrail_bypass_motivo IS
    'Why this message may pass every guardrail (blocked doctor, contact_cap_7d); only members of fila_guardrail_bypass can set it';
COMMENT ON COLUMN fila_mensagens.guardrail_bypass_por IS 'The login that set the bypass (session_user), stamped by the database';
COMMENT ON COLUMN fila_mensagens.guardrail_bypass_em IS 'When the bypass was set, stamped by the database';

CREATE FUNCTION fila_may_bypass_guardrails() RETURNS boolean
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
        OR (to_regrole('fila_guardrail_bypass') IS NOT NULL
            AND pg_has_role(current_user, 'fila_guardrail_bypass', 'MEMBER'));
$$;

COMMENT ON FUNCTION fila_may_bypass_guardrails() IS
    'Whether the current role may set a guardrail bypass: a superuser, or a member of fila_guardrail_bypass';

-- Setting, changing or forging a bypass goes through here: an unauthorised role is refused
-- (SQLSTATE 42501), and who and when are stamped, whatever the statement said.
CREATE FUNCTION fila_mensagens_guardrail_bypass() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.guardrail_bypass_motivo IS NULL THEN
        -- Clearing a bypass only makes the guardrails stricter: anyone may.
        NEW.guardrail_bypass_por := NULL;
        NEW.guardrail_bypass_em := NULL;
        RETURN NEW;
    END IF;
    IF NOT fila_may_bypass_guardrails() THEN
        RAISE EXCEPTION 'role % may not set a guardrail bypass: only members of fila_guardrail_bypass may', current_user
            USING ERRCODE = '42501', HINT = 'enqueue the message without guardrail_bypass_motivo, or ask for GRANT fila_guardrail_bypass TO your role';
    END IF;
    NEW.guardrail_bypass_por := session_user;
    NEW.guardrail_bypass_em := now();
    RETURN NEW;
END;
$$;

-- WHEN clauses keep the hot paths (enqueue without a bypass, claim, outcome) free of any call.
CREATE TRIGGER fila_mensagens_guardrail_bypass_insert
    BEFORE INSERT ON fila_mensagens
    FOR EACH ROW
    WHEN (NEW.guardrail_bypass_motivo IS NOT NULL OR NEW.guardrail_bypass_por IS NOT NULL OR NEW.guardrail_bypass_em IS NOT NULL)
    EXECUTE FUNCTION fila_mensagens_guardrail_bypass();

CREATE TRIGGER fila_mensagens_guardrail_bypass_update
    BEFORE UPDATE OF guardrail_bypass_motivo, guardrail_bypass_por, guardrail_bypass_em ON fila_mensagens
    FOR EACH ROW
    WHEN (NEW.guardrail_bypass_motivo IS DISTINCT FROM OLD.guardrail_bypass_motivo
          OR NEW.guardrail_bypass_por IS DISTINCT FROM OLD.guardrail_bypass_por
          OR NEW.guardrail_bypass_em IS DISTINCT FROM OLD.guardrail_bypass_em)
    EXECUTE FUNCTION fila_mensagens_guardrail_bypass();

CREATE TABLE guardrail_bypasses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: the audit outlives the message's archiving.
    mensagem_id uuid NOT NULL,
    cliente_id  text NOT NULL,
    guardrail   text NOT NULL CHECK (guardrail IN ('blocked', 'contact_cap_7d')),
    motivo      text NOT NULL,
    -- Who set the bypass on the message (fila_mensagens.guardrail_bypass_por).
    bypassed_by text NOT NULL,
    -- When the guardrail would have refused the message and let it pass.
    bypassed_at timestamptz NOT NULL DEFAULT now(),
    -- The worker that let it pass.
    worker_id   text,
    UNIQUE (mensagem_id, guardrail)
);

COMMENT ON TABLE guardrail_bypasses IS
    'Every guardrail a message was let past by its bypass: who set it, when it was used, why, which message and guardrail (seed T06.2); one row per message and guardrail';

CREATE INDEX guardrail_bypasses_bypassed_at_idx ON guardrail_bypasses (bypassed_at);
CREATE INDEX guardrail_bypasses_cliente_idx ON guardrail_bypasses (cliente_id, bypassed_at DESC);

-- The check -----------------------------------------------------------------------------------

-- One call per message, before anything spends budget. Returns the guardrail that refuses
-- the message (NULL when it may go), the doctor's campaign contacts in the last 7 days
-- (with this one when it was counted), whether this call counted it, and the guardrails its
-- bypass let it past (each also a guardrail_bypasses row).
--
-- The cap holds across workers: the per-doctor lock is taken before the count, each
-- statement of this VOLATILE function reads a fresh snapshot, and the lock is held until the
-- caller's transaction commits its row. A message that already holds a row (a retry after
-- a timeout) keeps it and is not counted twice.
CREATE FUNCTION fila_guardrails_check(p_mensagem_id uuid, p_cap_enabled boolean, p_cap_limit integer, p_worker_id text DEFAULT NULL)
RETURNS TABLE (refused_by text, contacts integer, counted boolean, bypassed text[])
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    m record;
    used integer := 0;
    passed text[] := '{}';
    was_counted boolean := false;
BEGIN
    IF p_cap_limit IS NULL OR p_cap_limit < 0 THEN
        RAISE EXCEPTION 'the cap must be a whole number >= 0, not %', p_cap_limit USING ERRCODE = '22023';
    END IF;
    SELECT f.cliente_id, f.tipo, f.guardrail_bypass_motivo AS motivo, f.guardrail_bypass_por AS por
      INTO m FROM fila_mensagens f WHERE f.id = p_mensagem_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message %', p_mensagem_id USING ERRCODE = 'P0002';
    END IF;

    IF EXISTS (SELECT 1 FROM medico_bloqueios b WHERE b.cliente_id = m.cliente_id AND b.unblocked_at IS NULL) THEN
        IF m.motivo IS NULL THEN
            RETURN QUERY SELECT 'blocked'::text, NULL::integer, false, passed;
            RETURN;
        END IF;
        passed := passed || 'blocked'::text;
    END IF;

    IF m.tipo = 'campanha' THEN
        -- Class 0x66677264 ('fgrd'), apart from the job runner's and the migrator's locks. Two
        -- doctors whose ids hash alike only wait for each other.
        PERFORM pg_advisory_xact_lock(1718055524, hashtext(m.cliente_id));
        DELETE FROM guardrail_contacts c
         WHERE c.cliente_id = m.cliente_id AND c.contacted_at < now() - interval '8 days';
        SELECT count(*) FILTER (WHERE c.mensagem_id <> p_mensagem_id),
               coalesce(bool_or(c.mensagem_id = p_mensagem_id), false)
          INTO used, was_counted
          FROM guardrail_contacts c
         WHERE c.cliente_id = m.cliente_id
           AND (c.contacted_at > now() - interval '7 days' OR c.mensagem_id = p_mensagem_id);
        IF was_counted THEN
            used := used + 1;
            was_counted := false;
        ELSE
            IF p_cap_enabled AND used >= p_cap_limit THEN
                IF m.motivo IS NULL THEN
                    RETURN QUERY SELECT 'contact_cap_7d'::text, used, false, passed;
                    RETURN;
                END IF;
                passed := passed || 'contact_cap_7d'::text;
            END IF;
            INSERT INTO guardrail_contacts (mensagem_id, cliente_id) VALUES (p_mensagem_id, m.cliente_id);
            used := used + 1;
            was_counted := true;
        END IF;
    END IF;

    IF cardinality(passed) > 0 THEN
        INSERT INTO guardrail_bypasses (mensagem_id, cliente_id, guardrail, motivo, bypassed_by, worker_id)
        SELECT p_mensagem_id, m.cliente_id, g, m.motivo, m.por, p_worker_id FROM unnest(passed) AS g
        ON CONFLICT (mensagem_id, guardrail) DO NOTHING;
    END IF;
    RETURN QUERY SELECT NULL::text, CASE WHEN m.tipo = 'campanha' THEN used END, was_counted, passed;
END;
$$;

COMMENT ON FUNCTION fila_guardrails_check(uuid, boolean, integer, text) IS
    'The guardrails for one message (blocked doctor, then contact_cap_7d for campaigns): the guardrail refusing it, or NULL; counts the contact and audits any bypass. Called by the worker before the rate limit';

-- Gives a message's contact back: it surely did not go out (refused later in the pipeline).
CREATE FUNCTION fila_guardrails_release(p_mensagem_id uuid) RETURNS boolean
LANGUAGE sql SECURITY INVOKER SET search_path FROM CURRENT AS $$
    WITH gone AS (DELETE FROM guardrail_contacts WHERE mensagem_id = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone);
$$;

COMMENT ON FUNCTION fila_guardrails_release(uuid) IS
    'Removes a message''s counted campaign contact, when the message surely did not go out; false when it had none';
