-- 0014_ops_interventions: the RUNBOOK's interventions as audited functions.
--
-- ops_audit                 every intervention made through an ops function: who (session_user,
--                           never a name the caller supplies), what, with which arguments, why,
--                           when, and how many rows it changed
-- ops.requeue(id, motivo)                       one ended, unsent message: another attempt now
-- ops.requeue_failed(since, outcome, motivo)    every erro row of a retryable outcome since then
-- ops.cancel(id, motivo)                        one pending message
-- ops.cancel_campaign(correlation_id, motivo)   a campaign's pending messages
-- ops.send_now(id, motivo)                      one pending message, due now
-- ops.return_stuck(worker_id, motivo)           a worker's processando rows back to pendente
-- ops.run_job(name) / ops.pause_job(name, motivo) / ops.resume_job(name, motivo)
--
-- Each refuses bad arguments with SQLSTATE 22023 and a sentence, changes nothing then, and
-- returns what it changed (the row, or a count). A message requeued or made due wakes idle
-- workers at once (NOTIFY fila_mensagens); schedulers read job_definitions at every tick, so a
-- job paused or resumed takes effect from their next one. None of them ever changes a row that
-- was sent.

CREATE TABLE ops_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feito_em   timestamptz NOT NULL DEFAULT now(),
    feito_por  text NOT NULL DEFAULT session_user,
    acao       text NOT NULL,
    argumentos jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(argumentos) = 'object'),
    motivo     text,
    linhas     integer NOT NULL CHECK (linhas >= 0)
);

COMMENT ON TABLE ops_audit IS
    'Every intervention made through an ops.* function: who (session_user), what, arguments, why, when, rows changed. SELECT * FROM ops_audit ORDER BY id DESC LIMIT 20;';

CREATE INDEX ops_audit_feito_em_idx ON ops_audit (feito_em);

-- The motivo every intervention takes: 1-1000 characters, not blank.
CREATE FUNCTION fila_ops_motivo(p_motivo text, p_what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
BEGIN
    IF p_motivo IS NULL OR length(btrim(p_motivo)) = 0 OR length(btrim(p_motivo)) > 1000 THEN
        RAISE EXCEPTION 'a motivo is required (1-1000 characters): say why you %', p_what USING ERRCODE = '22023';
    END IF;
    RETURN btrim(p_motivo);
END;
$$;

-- One message by id, locked, or a sentence saying there is none.
CREATE FUNCTION fila_ops_message(p_id uuid) RETURNS fila_mensagens
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    found_row fila_mensagens;
BEGIN
    IF p_id IS NULL THEN
        RAISE EXCEPTION 'a message id is required' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO found_row FROM fila_mensagens WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message with id % (archived ones are in fila_mensagens_arquivo and cannot be changed)', p_id
            USING ERRCODE = '22023';
    END IF;
    RETURN found_row;
END;
$$;

CREATE FUNCTION fila_ops_record(p_acao text, p_argumentos jsonb, p_motivo text, p_linhas integer) RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO ops_audit (acao, argumentos, motivo, linhas) VALUES (p_acao, p_argumentos, p_motivo, p_linhas);
$$;

-- Messages ------------------------------------------------------------------------------------

-- SELECT ops.requeue('5f0c9a4e-…', 'the provider was down; the doctor is waiting');
CREATE FUNCTION ops.requeue(id uuid, motivo text) RETURNS fila_mensagens
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'requeue the message');
    msg fila_mensagens := fila_ops_message(requeue.id);
BEGIN
    IF msg.status = 'enviada' THEN
        RAISE EXCEPTION 'message % was sent (enviada at %): requeueing it would send it twice', msg.id, msg.enviada_em
            USING ERRCODE = '22023';
    ELSIF msg.status IN ('pendente', 'processando') THEN
        RAISE EXCEPTION 'message % is % already: nothing to requeue', msg.id, msg.status
            USING ERRCODE = '22023', HINT = 'ops.send_now makes a pending message due now';
    END IF;
    -- One more attempt, the failed ones still counted (RUNBOOK 4.2); the outcome still tells
    -- how the last attempt ended until the next one.
    UPDATE fila_mensagens m
       SET status = 'pendente', agendar_para = now(),
           max_tentativas = greatest(m.max_tentativas, least(100, m.tentativas + 1)),
           worker_id = NULL, processando_desde = NULL, updated_at = now()
     WHERE m.id = msg.id
    RETURNING * INTO msg;
    PERFORM fila_ops_record('requeue', jsonb_build_object('id', msg.id), why, 1);
    PERFORM pg_notify('fila_mensagens', '');
    RETURN msg;
END;
$$;

COMMENT ON FUNCTION ops.requeue(uuid, text) IS
    'Gives one ended, unsent message (erro or cancelada) another attempt now; refuses a sent or unfinished one (SQLSTATE 22023). Audited in ops_audit';

-- SELECT ops.requeue_failed(now() - interval '6 hours', 'FAILED_PROVIDER', 'Evolution was down 09:00-09:40');
CREATE FUNCTION ops.requeue_failed(since timestamptz, outcome text, motivo text) RETURNS integer
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'requeue these failures');
    changed integer;
BEGIN
    IF since IS NULL OR since > now() THEN
        RAISE EXCEPTION 'since must be a time in the past, e.g. now() - interval ''6 hours''' USING ERRCODE = '22023';
    END IF;
    IF requeue_failed.outcome IN ('FAILED_VALIDATION', 'FAILED_GUARDRAIL') THEN
        RAISE EXCEPTION '% is not retryable: sending those again would be wrong (invalid number, blocked or over-contacted doctor)', requeue_failed.outcome
            USING ERRCODE = '22023', HINT = 'ops.requeue(id, motivo) takes one message you have checked';
    ELSIF requeue_failed.outcome IS NULL OR requeue_failed.outcome NOT IN ('FAILED_PROVIDER', 'FAILED_TIMEOUT', 'FAILED_STUCK', 'FAILED_WORKER_LOST') THEN
        RAISE EXCEPTION 'outcome must be one that ends in erro and may succeed on another try: FAILED_PROVIDER, FAILED_TIMEOUT, FAILED_STUCK or FAILED_WORKER_LOST (got %)', coalesce(requeue_failed.outcome, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    UPDATE fila_mensagens m
       SET status = 'pendente', agendar_para = now(),
           max_tentativas = greatest(m.max_tentativas, least(100, m.tentativas + 1)),
           updated_at = now()
     WHERE m.status = 'erro' AND m.outcome = requeue_failed.outcome AND m.outcome_at >= since;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM fila_ops_record('requeue_failed', jsonb_build_object('since', since, 'outcome', requeue_failed.outcome), why, changed);
    IF changed > 0 THEN
        PERFORM pg_notify('fila_mensagens', '');
    END IF;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.requeue_failed(timestamptz, text, text) IS
    'Gives every erro message of a retryable outcome since a time one more attempt now; returns how many. Never a sent row, never FAILED_VALIDATION or FAILED_GUARDRAIL. Audited';

-- SELECT ops.cancel('5f0c9a4e-…', 'sent by mistake');
CREATE FUNCTION ops.cancel(id uuid, motivo text) RETURNS fila_mensagens
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'cancel the message');
    msg fila_mensagens := fila_ops_message(cancel.id);
BEGIN
    IF msg.status = 'processando' THEN
        RAISE EXCEPTION 'message % is being sent now (by %): it can no longer be cancelled', msg.id, msg.worker_id
            USING ERRCODE = '22023';
    ELSIF msg.status <> 'pendente' THEN
        RAISE EXCEPTION 'message % is % already: only a pending message can be cancelled', msg.id, msg.status
            USING ERRCODE = '22023';
    END IF;
    UPDATE fila_mensagens m
       SET status = 'cancelada', outcome = 'CANCELLED_MANUAL', outcome_reason_code = 'manual:' || session_user,
           outcome_at = now(), updated_at = now()
     WHERE m.id = msg.id
    RETURNING * INTO msg;
    PERFORM fila_ops_record('cancel', jsonb_build_object('id', msg.id), why, 1);
    RETURN msg;
END;
$$;

COMMENT ON FUNCTION ops.cancel(uuid, text) IS
    'Cancels one pending message (CANCELLED_MANUAL); refuses one being sent or ended (SQLSTATE 22023). Audited';

-- SELECT ops.cancel_campaign('campanha-7', 'wrong text in the template');
CREATE FUNCTION ops.cancel_campaign(correlation_id text, motivo text) RETURNS integer
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'cancel the campaign');
    changed integer;
    in_flight integer;
BEGIN
    IF cancel_campaign.correlation_id IS NULL OR length(btrim(cancel_campaign.correlation_id)) = 0 THEN
        RAISE EXCEPTION 'a correlation_id is required, e.g. ''campanha-7''' USING ERRCODE = '22023';
    END IF;
    UPDATE fila_mensagens m
       SET status = 'cancelada', outcome = 'CANCELLED_MANUAL', outcome_reason_code = 'manual:' || session_user,
           outcome_at = now(), updated_at = now()
     WHERE m.status = 'pendente' AND m.correlation_id = cancel_campaign.correlation_id;
    GET DIAGNOSTICS changed = ROW_COUNT;
    SELECT count(*) INTO in_flight FROM fila_mensagens m
     WHERE m.status = 'processando' AND m.correlation_id = cancel_campaign.correlation_id;
    IF in_flight > 0 THEN
        RAISE NOTICE '% message(s) of % are being sent now and will finish', in_flight, cancel_campaign.correlation_id;
    END IF;
    PERFORM fila_ops_record('cancel_campaign', jsonb_build_object('correlation_id', cancel_campaign.correlation_id), why, changed);
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.cancel_campaign(text, text) IS
    'Cancels the pending messages of a correlation_id (CANCELLED_MANUAL) and returns how many; those being sent finish (a NOTICE counts them). Audited';

-- SELECT ops.send_now('5f0c9a4e-…', 'the doctor asked for it today');
CREATE FUNCTION ops.send_now(id uuid, motivo text) RETURNS fila_mensagens
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'send the message now');
    msg fila_mensagens := fila_ops_message(send_now.id);
BEGIN
    IF msg.status <> 'pendente' THEN
        RAISE EXCEPTION 'message % is %: only a pending message can be made due', msg.id, msg.status
            USING ERRCODE = '22023', HINT = 'ops.requeue gives an ended (erro or cancelada) message another attempt';
    END IF;
    -- Only the schedule changes: no attempt is used, the outcome is left as it is.
    UPDATE fila_mensagens m SET agendar_para = least(m.agendar_para, now()), updated_at = now()
     WHERE m.id = msg.id
    RETURNING * INTO msg;
    PERFORM fila_ops_record('send_now', jsonb_build_object('id', msg.id), why, 1);
    PERFORM pg_notify('fila_mensagens', '');
    RETURN msg;
END;
$$;

COMMENT ON FUNCTION ops.send_now(uuid, text) IS
    'Makes one pending message due now (no attempt used); refuses any other status (SQLSTATE 22023). Audited';

-- SELECT ops.return_stuck('host-a:4242:1f2e…', 'worker hung since 09:10');
CREATE FUNCTION ops.return_stuck(worker_id text, motivo text) RETURNS integer
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'take these messages back');
    changed integer;
BEGIN
    IF return_stuck.worker_id IS NULL OR length(btrim(return_stuck.worker_id)) = 0 THEN
        RAISE EXCEPTION 'a worker_id is required (worker_heartbeats.id, as fila_mensagens.worker_id shows it)' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM worker_heartbeats h WHERE h.id = return_stuck.worker_id AND fila_process_alive(h)) THEN
        RAISE NOTICE 'worker % is alive: a send it has under way may still deliver, and the next claim would send it again', return_stuck.worker_id;
    END IF;
    -- Its claims are voided (fenced: the worker cannot write over them later); no attempt used.
    UPDATE fila_mensagens m
       SET status = 'pendente', agendar_para = now(),
           outcome = 'FAILED_WORKER_LOST', outcome_reason_code = 'manual:' || m.worker_id,
           outcome_at = now(), worker_id = NULL, processando_desde = NULL, updated_at = now()
     WHERE m.status = 'processando' AND m.worker_id = return_stuck.worker_id;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM fila_ops_record('return_stuck', jsonb_build_object('worker_id', return_stuck.worker_id), why, changed);
    IF changed > 0 THEN
        PERFORM pg_notify('fila_mensagens', '');
    END IF;
    RETURN changed;
END;
$$;

COMMENT ON FUNCTION ops.return_stuck(text, text) IS
    'Returns a worker''s processando messages to pendente (FAILED_WORKER_LOST, no attempt used) and says how many; a NOTICE warns when the worker is alive. Audited';

-- Jobs ----------------------------------------------------------------------------------------

CREATE FUNCTION fila_ops_job(p_name text) RETURNS job_definitions
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    job job_definitions;
BEGIN
    SELECT * INTO job FROM job_definitions WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job named %', coalesce(p_name, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT name, enabled FROM job_definitions ORDER BY name; lists them';
    END IF;
    RETURN job;
END;
$$;

-- SELECT ops.run_job('arquivar-fila');
CREATE FUNCTION ops.run_job(name text) RETURNS job_executions
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    job job_definitions := fila_ops_job(run_job.name);
    execution job_executions;
BEGIN
    -- A request a scheduler picks up within seconds (or fails, saying so, within 2 minutes).
    INSERT INTO job_executions (job_name, triggered_by) VALUES (job.name, 'psql') RETURNING * INTO execution;
    PERFORM fila_ops_record('run_job', jsonb_build_object('name', job.name, 'execution_id', execution.id), NULL, 1);
    RETURN execution;
END;
$$;

COMMENT ON FUNCTION ops.run_job(text) IS
    'Asks for a run of a job now (a job_executions row a scheduler picks up within seconds); returns it. Audited';

CREATE FUNCTION fila_ops_set_job_enabled(p_name text, p_enabled boolean, p_motivo text) RETURNS job_definitions
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(p_motivo, CASE WHEN p_enabled THEN 'resume the job' ELSE 'pause the job' END);
    job job_definitions := fila_ops_job(p_name);
BEGIN
    IF job.enabled = p_enabled THEN
        RAISE EXCEPTION 'job % is % already', job.name, CASE WHEN p_enabled THEN 'running on its schedule' ELSE 'paused' END
            USING ERRCODE = '22023';
    END IF;
    UPDATE job_definitions SET enabled = p_enabled WHERE name = job.name RETURNING * INTO job;
    PERFORM fila_ops_record(CASE WHEN p_enabled THEN 'resume_job' ELSE 'pause_job' END, jsonb_build_object('name', job.name), why, 1);
    RETURN job;
END;
$$;

-- SELECT ops.pause_job('verificar-whatsapp', 'Evolution maintenance tonight');
CREATE FUNCTION ops.pause_job(name text, motivo text) RETURNS job_definitions
LANGUAGE sql SECURITY INVOKER SET search_path FROM CURRENT AS $$ SELECT fila_ops_set_job_enabled(name, false, motivo) $$;

CREATE FUNCTION ops.resume_job(name text, motivo text) RETURNS job_definitions
LANGUAGE sql SECURITY INVOKER SET search_path FROM CURRENT AS $$ SELECT fila_ops_set_job_enabled(name, true, motivo) $$;

COMMENT ON FUNCTION ops.pause_job(text, text) IS
    'Stops a job on every scheduler within seconds (job_definitions.enabled = false) until ops.resume_job. Audited';
COMMENT ON FUNCTION ops.resume_job(text, text) IS
    'Puts a paused job back on its schedule. Audited';

-- The audit as people read it.
CREATE VIEW ops.audit AS
SELECT id, feito_em, feito_por, acao, argumentos, motivo, linhas FROM ops_audit;

COMMENT ON VIEW ops.audit IS 'Every intervention through an ops function, newest first with ORDER BY id DESC. SELECT * FROM ops.audit ORDER BY id DESC LIMIT 20;';
