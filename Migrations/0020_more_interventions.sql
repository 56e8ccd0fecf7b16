-- 0020_more_interventions: the RUNBOOK's remaining interventions as audited ops functions, so an
-- operator (fila_operator, which writes no table itself) has one SELECT ops.… line for each.
--
-- ops.cancel_pending(motivo, correlation_id, metadata, tipo, created_from, created_until)
--                                                   pending messages matching every filter given
-- ops.send_campaign_now(correlation_id, motivo)     a campaign's later messages, due now
-- ops.set_priority(id, prioridade, motivo)          one pending message ahead of (or behind) others
-- ops.requeue_unblocked(cliente_id, since, motivo)  a doctor's messages refused while blocked
-- ops.bypass_guardrails(id, motivo)                 one message past every guardrail
--                                                   (members of fila_guardrail_bypass only)
-- ops.reset_rate_limit(cliente_id, motivo)          a doctor's budget for today, back
-- ops.mark_false_alert(id, motivo)                  an alert notification that was a false alert
-- ops.retry_failed_alerts(since, motivo)            undelivered alert notifications, sent again
-- ops.set_chip_limits(chip, limite_diario, min_intervalo_segundos, motivo)
-- ops.set_default_chip(chip, motivo)
--
-- Like those of 0014: bad arguments are refused with SQLSTATE 22023 and a sentence, nothing
-- changes then, every call is a row in ops_audit (chip defaults in chip_events too), and a
-- change that makes messages due wakes idle workers.

-- Messages ------------------------------------------------------------------------------------

-- SELECT ops.cancel_pending('wrong template', metadata => '{"campanha_id": "7"}');
CREATE FUNCTION ops.cancel_pending(
    motivo text, correlation_id text DEFAULT NULL, metadata jsonb DEFAULT NULL, tipo text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_until timestamptz DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'cancel these messages');
    changed integer;
    in_flight integer;
BEGIN
    IF num_nonnulls(cancel_pending.correlation_id, cancel_pending.metadata, cancel_pending.tipo,
                    cancel_pending.created_from, cancel_pending.created_until) = 0 THEN
        RAISE EXCEPTION 'say which messages: correlation_id, metadata, tipo, created_from or created_until (all given must match)'
            USING ERRCODE = '22023', HINT = 'SELECT ops.cancel_pending(''why'', metadata => ''{"campanha_id": "7"}'');';
    END IF;
    IF cancel_pending.metadata IS NOT NULL AND (jsonb_typeof(cancel_pending.metadata) <> 'object' OR cancel_pending.metadata = '{}') THEN
        RAISE EXCEPTION 'metadata must be a non-empty JSON object the rows'' metadata contains, e.g. {"campanha_id": "7"} ({} would match every row)'
            USING ERRCODE = '22023';
    END IF;
    IF cancel_pending.correlation_id IS NOT NULL AND length(btrim(cancel_pending.correlation_id)) = 0 THEN
        RAISE EXCEPTION 'correlation_id must not be blank' USING ERRCODE = '22023';
    END IF;
    IF NOT isfinite(coalesce(cancel_pending.created_from, now())) OR NOT isfinite(coalesce(cancel_pending.created_until, now())) THEN
        RAISE EXCEPTION 'created_from and created_until must be finite times' USING ERRCODE = '22023';
    END IF;
    IF cancel_pending.tipo IS NOT NULL AND cancel_pending.tipo NOT IN ('resposta', 'campanha', 'followup', 'sistema') THEN
        RAISE EXCEPTION 'tipo must be resposta, campanha, followup or sistema, not %', cancel_pending.tipo USING ERRCODE = '22023';
    END IF;
    IF cancel_pending.created_from >= cancel_pending.created_until THEN
        RAISE EXCEPTION 'created_from must come before created_until' USING ERRCODE = '22023';
    END IF;
    UPDATE fila_mensagens m
       SET status = 'cancelada', outcome = 'CANCELLED_MANUAL', outcome_reason_code = 'manual:' || session_user,
           outcome_at = now(), updated_at = now()
     WHERE m.status = 'pendente'
       AND (cancel_pending.correlation_id IS NULL OR m.correlation_id = cancel_pending.correlation_id)
       AND (cancel_pending.metadata IS NULL OR m.metadata @> cancel_pending.metadata)
       AND (cancel_pending.tipo IS NULL OR m.tipo = cancel_pending.tipo)
       AND (cancel_pending.created_from IS NULL OR m.created_at >= cancel_pending.created_from)
       AND (cancel_pending.created_until IS NULL OR m.created_at < cancel_pending.created_until);
    GET DIAGNOSTICS changed = ROW_COUNT;
    SELECT count(*) INTO in_flight FROM fila_mensagens m
     WHERE m.status = 'processando'
       AND (cancel_pending.correlation_id IS NULL OR m.correlation_id = cancel_pending.correlation_id)
       AND (cancel_pending.metadata IS NULL OR m.metadata @> cancel_pending.metadata)
       AND (cancel_pending.tipo IS NULL OR m.tipo = cancel_pending.tipo)
       AND (cancel_pending.created_from IS NULL OR m.created_at >= cancel_pending.created_from)
       AND (cancel_pending.created_until IS NULL OR m.created_at < cancel_pending.created_until);
    IF in_flight > 0 THEN
        RAISE NOTICE '% matching message(s) are being sent now and will finish', in_flight;
    END IF;
    PERFORM fila_ops_record('cancel_pending', jsonb_strip_nulls(jsonb_build_object(
        'correlation_id', cancel_pending.correlation_id, 'metadata', cancel_pending.metadata, 'tipo', cancel_pending.tipo,
        'created_from', cancel_pending.created_from, 'created_until', cancel_pending.created_until)), why, changed);
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.cancel_pending(text, text, jsonb, text, timestamptz, timestamptz) IS
    'Cancels the pending messages matching every filter given (correlation_id, metadata containment, tipo, created_at window) and returns how many; a NOTICE counts those being sent. Audited';

-- SELECT ops.send_campaign_now('campanha-7', 'the clinic asked to send it today');
CREATE FUNCTION ops.send_campaign_now(correlation_id text, motivo text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'send the campaign now');
    changed integer;
BEGIN
    IF send_campaign_now.correlation_id IS NULL OR length(btrim(send_campaign_now.correlation_id)) = 0 THEN
        RAISE EXCEPTION 'a correlation_id is required, e.g. ''campanha-7''' USING ERRCODE = '22023';
    END IF;
    -- Only the schedule changes: no attempt used, the outcome left as it is.
    UPDATE fila_mensagens m SET agendar_para = now(), updated_at = now()
     WHERE m.status = 'pendente' AND m.correlation_id = send_campaign_now.correlation_id AND m.agendar_para > now();
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM fila_ops_record('send_campaign_now', jsonb_build_object('correlation_id', send_campaign_now.correlation_id), why, changed);
    IF changed > 0 THEN
        PERFORM pg_notify('fila_mensagens', '');
    END IF;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.send_campaign_now(text, text) IS
    'Makes the pending messages of a correlation_id scheduled later due now (no attempt used) and returns how many. Audited';

-- SELECT ops.set_priority('5f0c9a4e-…', 100, 'the doctor is waiting for it');
CREATE FUNCTION ops.set_priority(id uuid, prioridade integer, motivo text) RETURNS fila_mensagens
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'change its priority');
    msg fila_mensagens := fila_ops_message(set_priority.id);
    before smallint := msg.prioridade;
BEGIN
    IF set_priority.prioridade IS NULL OR set_priority.prioridade NOT BETWEEN -100 AND 100 THEN
        RAISE EXCEPTION 'prioridade must be between -100 and 100 (claims take the highest first), not %', coalesce(set_priority.prioridade::text, 'NULL')
            USING ERRCODE = '22023';
    ELSIF msg.status <> 'pendente' THEN
        RAISE EXCEPTION 'message % is %: only a pending message waits in line', msg.id, msg.status USING ERRCODE = '22023';
    END IF;
    UPDATE fila_mensagens m SET prioridade = set_priority.prioridade, updated_at = now()
     WHERE m.id = msg.id
    RETURNING * INTO msg;
    PERFORM fila_ops_record('set_priority', jsonb_build_object('id', msg.id, 'de', before, 'para', msg.prioridade), why, 1);
    PERFORM pg_notify('fila_mensagens', '');
    RETURN msg;
END;
$$;

COMMENT ON FUNCTION ops.set_priority(uuid, integer, text) IS
    'Sets one pending message''s prioridade (-100 to 100; claims take the highest first). Audited with the value before and after';

-- Guardrails ----------------------------------------------------------------------------------

-- SELECT ops.requeue_unblocked('medico-42', now() - interval '1 day', 'unblocked: confirmed by phone');
CREATE FUNCTION ops.requeue_unblocked(cliente_id text, since timestamptz, motivo text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'send these messages again');
    changed integer;
BEGIN
    IF requeue_unblocked.cliente_id IS NULL OR length(btrim(requeue_unblocked.cliente_id)) = 0 THEN
        RAISE EXCEPTION 'a cliente_id is required' USING ERRCODE = '22023';
    END IF;
    IF since IS NULL OR since > now() THEN
        RAISE EXCEPTION 'since must be a time in the past, e.g. now() - interval ''1 day''' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM medico_bloqueios b WHERE b.cliente_id = requeue_unblocked.cliente_id AND b.unblocked_at IS NULL) THEN
        RAISE EXCEPTION '% is still blocked: the messages would be refused again', requeue_unblocked.cliente_id
            USING ERRCODE = '22023', HINT = 'SELECT ops.unblock_medico(cliente_id, motivo); first';
    END IF;
    -- One more attempt, as ops.requeue gives; the outcome says how the last one ended until the next.
    UPDATE fila_mensagens m
       SET status = 'pendente', agendar_para = now(),
           max_tentativas = greatest(m.max_tentativas, least(100, m.tentativas + 1)), updated_at = now()
     WHERE m.cliente_id = requeue_unblocked.cliente_id AND m.status = 'erro' AND m.outcome = 'FAILED_GUARDRAIL'
       AND m.outcome_reason_code = 'guardrail:blocked' AND m.outcome_at >= since;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM fila_ops_record('requeue_unblocked', jsonb_build_object('cliente_id', requeue_unblocked.cliente_id, 'since', since), why, changed);
    IF changed > 0 THEN
        PERFORM pg_notify('fila_mensagens', '');
    END IF;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.requeue_unblocked(text, timestamptz, text) IS
    'Sends again a doctor''s messages refused while they were blocked (guardrail:blocked) since then; refused while the doctor is still blocked. Audited';

-- Whether a role may put a bypass on a message: a superuser or a member of fila_guardrail_bypass.
CREATE FUNCTION fila_role_may_bypass(p_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = p_role), false)
        OR (to_regrole('fila_guardrail_bypass') IS NOT NULL AND to_regrole(p_role) IS NOT NULL
            AND pg_has_role(p_role, 'fila_guardrail_bypass', 'MEMBER'));
$$;

-- The bypass trigger's check, as before: the current role's right.
CREATE OR REPLACE FUNCTION fila_may_bypass_guardrails() RETURNS boolean
LANGUAGE sql STABLE SECURITY INVOKER SET search_path FROM CURRENT AS $$
    SELECT fila_role_may_bypass(current_user);
$$;

-- Inside ops.bypass_guardrails the current role is the functions' owner, which need not be a
-- member: there the login that function checked counts. Only the table's owner gets this
-- second look, and the owner can change its rows (and disable this trigger) anyway.
CREATE OR REPLACE FUNCTION fila_mensagens_guardrail_bypass() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.guardrail_bypass_motivo IS NULL THEN
        -- Clearing a bypass only makes the guardrails stricter: anyone may.
        NEW.guardrail_bypass_por := NULL;
        NEW.guardrail_bypass_em := NULL;
        RETURN NEW;
    END IF;
    IF NOT fila_may_bypass_guardrails()
       AND NOT (fila_role_may_bypass(session_user)
                AND (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID) = (SELECT r.oid FROM pg_roles r WHERE r.rolname = current_user)) THEN
        RAISE EXCEPTION 'role % may not set a guardrail bypass: only members of fila_guardrail_bypass may', current_user
            USING ERRCODE = '42501', HINT = 'enqueue the message without guardrail_bypass_motivo, or ask for GRANT fila_guardrail_bypass TO your role';
    END IF;
    NEW.guardrail_bypass_por := session_user;
    NEW.guardrail_bypass_em := now();
    RETURN NEW;
END;
$$;

-- SELECT ops.bypass_guardrails('0190c3a2-…', 'approved by the coordination');
CREATE FUNCTION ops.bypass_guardrails(id uuid, motivo text) RETURNS fila_mensagens
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'send it past the guardrails');
    msg fila_mensagens := fila_ops_message(bypass_guardrails.id);
BEGIN
    -- The login's right, not the owner's (an owning superuser would let every operator past).
    IF NOT fila_role_may_bypass(session_user) THEN
        RAISE EXCEPTION 'login % may not bypass a guardrail: only members of fila_guardrail_bypass may', session_user
            USING ERRCODE = '42501', HINT = 'ask for GRANT fila_guardrail_bypass TO your login';
    END IF;
    IF msg.status = 'erro' AND msg.outcome IS DISTINCT FROM 'FAILED_GUARDRAIL' THEN
        RAISE EXCEPTION 'message % failed with %, not a guardrail: ops.requeue gives it another attempt', msg.id, msg.outcome
            USING ERRCODE = '22023';
    ELSIF msg.status NOT IN ('erro', 'pendente') THEN
        RAISE EXCEPTION 'message % is %: only a pending message or one a guardrail refused can be let past', msg.id, msg.status
            USING ERRCODE = '22023';
    END IF;
    -- The bypass trigger stamps the login and the time; the worker records each guardrail passed.
    UPDATE fila_mensagens m
       SET guardrail_bypass_motivo = why, status = 'pendente', agendar_para = least(m.agendar_para, now()),
           max_tentativas = CASE WHEN m.status = 'erro' THEN greatest(m.max_tentativas, least(100, m.tentativas + 1))
                                 ELSE m.max_tentativas END,
           updated_at = now()
     WHERE m.id = msg.id
    RETURNING * INTO msg;
    PERFORM fila_ops_record('bypass_guardrails', jsonb_build_object('id', msg.id), why, 1);
    PERFORM pg_notify('fila_mensagens', '');
    RETURN msg;
END;
$$;

COMMENT ON FUNCTION ops.bypass_guardrails(uuid, text) IS
    'Lets one message (pending, or refused by a guardrail) past every guardrail, due now; members of fila_guardrail_bypass only (SQLSTATE 42501). Audited, and each guardrail passed is a guardrail_bypasses row';

-- Rate limit ----------------------------------------------------------------------------------

-- SELECT ops.reset_rate_limit('medico-42', 'a message went out by mistake');
CREATE FUNCTION ops.reset_rate_limit(cliente_id text, motivo text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'give the budget back');
    zone text := (SELECT s.value #>> '{}' FROM app_settings s WHERE s.key = 'rate_limit.time_zone' AND jsonb_typeof(s.value) = 'string');
    today date;
    used integer;
BEGIN
    IF reset_rate_limit.cliente_id IS NULL OR length(btrim(reset_rate_limit.cliente_id)) = 0 THEN
        RAISE EXCEPTION 'a cliente_id is required' USING ERRCODE = '22023';
    END IF;
    IF zone IS NOT NULL THEN
        today := (now() AT TIME ZONE zone)::date;
    ELSE
        -- Without the setting each worker counts the day in its own TZ, which the database
        -- cannot see: today's window is the doctor's latest one, and today in any time zone is
        -- within a day of today in UTC.
        SELECT max(c.janela) INTO today FROM rate_limit_counters c
         WHERE c.cliente_id = reset_rate_limit.cliente_id
           AND c.janela BETWEEN (now() AT TIME ZONE 'UTC')::date - 1 AND (now() AT TIME ZONE 'UTC')::date + 1;
    END IF;
    SELECT c.usado INTO used FROM rate_limit_counters c
     WHERE c.cliente_id = reset_rate_limit.cliente_id AND c.janela = today FOR UPDATE;
    -- A new version, so a worker holding the old count retries its update.
    UPDATE rate_limit_counters c SET usado = 0, versao = c.versao + 1, updated_at = now()
     WHERE c.cliente_id = reset_rate_limit.cliente_id AND c.janela = today;
    RAISE NOTICE 'with REDIS_URL set, workers count in Redis while it is up: this reset the Postgres count only';
    PERFORM fila_ops_record('reset_rate_limit', jsonb_build_object('cliente_id', reset_rate_limit.cliente_id, 'janela', today, 'usado', used),
                            why, CASE WHEN used IS NULL THEN 0 ELSE 1 END);
    IF used > 0 THEN
        PERFORM pg_notify('fila_mensagens', '');
    END IF;
    RETURN coalesce(used, 0);
END;
$$;

COMMENT ON FUNCTION ops.reset_rate_limit(text, text) IS
    'Gives a doctor today''s rate-limit budget back (the Postgres store; today in rate_limit.time_zone, or the doctor''s latest window when it is not set) and returns what they had used. Audited';

-- Alerts --------------------------------------------------------------------------------------

-- SELECT ops.mark_false_alert(42, 'the queue was a planned campaign');
CREATE FUNCTION ops.mark_false_alert(id bigint, motivo text) RETURNS alert_events
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'mark it a false alert');
    event alert_events;
BEGIN
    UPDATE alert_events e SET false_positive = true WHERE e.id = mark_false_alert.id RETURNING * INTO event;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert notification with id %', coalesce(mark_false_alert.id::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT id, rule, key, title, created_at FROM alert_events ORDER BY id DESC LIMIT 20;';
    END IF;
    PERFORM fila_ops_record('mark_false_alert', jsonb_build_object('id', event.id, 'rule', event.rule), why, 1);
    RETURN event;
END;
$$;

COMMENT ON FUNCTION ops.mark_false_alert(bigint, text) IS
    'Marks an alert notification a false alert (ops.alertas_falsos_positivos counts them). Audited';

-- SELECT ops.retry_failed_alerts(now() - interval '1 day', 'new SLACK_WEBHOOK_URL in place');
CREATE FUNCTION ops.retry_failed_alerts(since timestamptz, motivo text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'send these notifications again');
    changed integer;
BEGIN
    IF since IS NULL OR since > now() THEN
        RAISE EXCEPTION 'since must be a time in the past, e.g. now() - interval ''1 day''' USING ERRCODE = '22023';
    END IF;
    UPDATE alert_events e SET status = 'pending', next_attempt_at = now(), last_error = NULL
     WHERE e.status IN ('failed', 'disabled') AND e.created_at >= since;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM fila_ops_record('retry_failed_alerts', jsonb_build_object('since', since), why, changed);
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.retry_failed_alerts(timestamptz, text) IS
    'Puts the alert notifications that failed or were not delivered (disabled) since then back to pending, due now; returns how many. Audited';

-- With no alert in 30 days the ROLLUP's total row divided by zero: the view failed on a new
-- installation instead of reading 0 alerts and no rate.
CREATE OR REPLACE VIEW ops.alertas_falsos_positivos AS
SELECT e.rule,
       count(*) AS alertas_30d,
       count(*) FILTER (WHERE e.false_positive) AS falsos_30d,
       round(100.0 * count(*) FILTER (WHERE e.false_positive) / nullif(count(*), 0), 1) AS taxa_falsos_30d_pct
  FROM alert_events e
 WHERE e.kind = 'firing' AND e.created_at > now() - interval '30 days'
 GROUP BY ROLLUP (e.rule)
 ORDER BY e.rule NULLS LAST;

-- Chips ---------------------------------------------------------------------------------------

-- SELECT ops.set_chip_limits('clinica-2', 300, 20, 'warmed up for a month');
CREATE FUNCTION ops.set_chip_limits(chip text, limite_diario integer, min_intervalo_segundos integer, motivo text) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'change the chip''s limits');
    before chips;
    result chips;
BEGIN
    IF set_chip_limits.limite_diario IS NULL AND set_chip_limits.min_intervalo_segundos IS NULL THEN
        RAISE EXCEPTION 'give limite_diario, min_intervalo_segundos or both (NULL keeps a value)' USING ERRCODE = '22023';
    END IF;
    IF set_chip_limits.limite_diario <= 0 OR set_chip_limits.limite_diario > 100000 THEN
        RAISE EXCEPTION 'limite_diario must be 1 to 100000, not %', set_chip_limits.limite_diario USING ERRCODE = '22023';
    END IF;
    IF set_chip_limits.min_intervalo_segundos < 0 OR set_chip_limits.min_intervalo_segundos > 86400 THEN
        RAISE EXCEPTION 'min_intervalo_segundos must be 0 to 86400, not %', set_chip_limits.min_intervalo_segundos USING ERRCODE = '22023';
    END IF;
    SELECT * INTO before FROM chips c WHERE c.id = chip FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no chip %', coalesce(chip, 'NULL') USING ERRCODE = '22023', HINT = 'SELECT id, nome, status FROM chips;';
    END IF;
    PERFORM set_config('fila.chip_motivo', why, true);
    UPDATE chips c
       SET limite_diario = coalesce(set_chip_limits.limite_diario, c.limite_diario),
           min_intervalo_segundos = coalesce(set_chip_limits.min_intervalo_segundos, c.min_intervalo_segundos)
     WHERE c.id = chip
    RETURNING * INTO result;
    PERFORM set_config('fila.chip_motivo', '', true);
    PERFORM fila_ops_record('set_chip_limits', jsonb_build_object(
        'chip', chip,
        'de', jsonb_build_object('limite_diario', before.limite_diario, 'min_intervalo_segundos', before.min_intervalo_segundos),
        'para', jsonb_build_object('limite_diario', result.limite_diario, 'min_intervalo_segundos', result.min_intervalo_segundos)), why, 1);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.set_chip_limits(text, integer, integer, text) IS
    'Changes a chip''s daily limit and minimum interval (NULL keeps one); workers use them within seconds. Audited with the values before and after';

-- SELECT ops.set_default_chip('clinica-2', 'clinica-1 is being retired');
CREATE FUNCTION ops.set_default_chip(chip text, motivo text) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'change the default chip');
    target chips;
    result chips;
BEGIN
    -- The default's row too, in id order: two changes of the default queue up instead of one
    -- failing on chips_one_default.
    PERFORM 1 FROM chips c WHERE c.is_default OR c.id = chip ORDER BY c.id FOR UPDATE;
    SELECT * INTO target FROM chips c WHERE c.id = chip;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no chip %', coalesce(chip, 'NULL') USING ERRCODE = '22023', HINT = 'SELECT id, nome, status FROM chips;';
    ELSIF target.status = 'banido' THEN
        RAISE EXCEPTION 'chip % is retired (banido): it cannot be the default', chip USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('fila.chip_motivo', why, true);
    UPDATE chips c SET is_default = false WHERE c.is_default AND c.id <> chip;
    UPDATE chips c SET is_default = true WHERE c.id = chip RETURNING * INTO result;
    PERFORM set_config('fila.chip_motivo', '', true);
    PERFORM fila_ops_record('set_default_chip', jsonb_build_object('chip', chip), why, 1);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.set_default_chip(text, text) IS
    'Makes a chip the default (the previous default stops being it); audited in chip_events and ops_audit';

-- Run as their owner, on the pinned path, for fila_operator only (0019).
SELECT fila_grant_roles();
