-- 0001_initial: the core schema.
--
-- fila_mensagens      the outbound message queue (one row per WhatsApp message)
-- worker_heartbeats   one row per running fila process, refreshed every few seconds
-- job_executions      every run of a periodic job, whoever triggered it
-- app_settings        thresholds and feature flags, editable with psql
--
-- Statuses and outcomes are text with CHECK constraints so that a row reads the same in
-- psql as in the code. Every timestamp is timestamptz and set by the database.

CREATE SCHEMA IF NOT EXISTS ops;
COMMENT ON SCHEMA ops IS 'Views for reporting (\dv ops.*); questions and interventions in ops/RUNBOOK.md';

-- The message queue ------------------------------------------------------------------------

CREATE TABLE fila_mensagens (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cliente_id          text NOT NULL CHECK (length(cliente_id) BETWEEN 1 AND 200),
    telefone            text NOT NULL CHECK (telefone ~ '^[0-9]{10,15}$'),
    conteudo            text NOT NULL CHECK (length(btrim(conteudo)) > 0 AND length(conteudo) <= 4096),
    tipo                text NOT NULL DEFAULT 'resposta'
                        CHECK (tipo IN ('resposta', 'campanha', 'followup', 'sistema')),
    prioridade          smallint NOT NULL DEFAULT 0 CHECK (prioridade BETWEEN -100 AND 100),
    status              text NOT NULL DEFAULT 'pendente'
                        CHECK (status IN ('pendente', 'processando', 'enviada', 'erro', 'cancelada')),
    tentativas          integer NOT NULL DEFAULT 0 CHECK (tentativas >= 0),
    max_tentativas      integer NOT NULL DEFAULT 3 CHECK (max_tentativas BETWEEN 1 AND 100),
    agendar_para        timestamptz NOT NULL DEFAULT now(),
    processando_desde   timestamptz,
    worker_id           text,
    outcome             text CHECK (outcome IN (
                            'SENT',
                            'FAILED_PROVIDER',
                            'FAILED_TIMEOUT',
                            'FAILED_VALIDATION',
                            'FAILED_RATE_LIMIT',
                            'FAILED_GUARDRAIL',
                            'FAILED_CIRCUIT_OPEN',
                            'FAILED_NO_CHIP',
                            'FAILED_EXPIRED',
                            'FAILED_STUCK',
                            'FAILED_WORKER_LOST',
                            'CANCELLED_MANUAL')),
    outcome_reason_code text,
    outcome_at          timestamptz,
    ultimo_erro         text,
    chip_id             text,
    provider            text,
    provider_message_id text,
    idempotency_key     text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    correlation_id      text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    enviada_em          timestamptz,

    -- A row being processed always says by whom and since when; a sent row says when.
    CONSTRAINT fila_mensagens_processando_tem_dono
        CHECK (status <> 'processando' OR (processando_desde IS NOT NULL AND worker_id IS NOT NULL)),
    CONSTRAINT fila_mensagens_enviada_tem_data
        CHECK (status <> 'enviada' OR enviada_em IS NOT NULL)
)
-- Each message is updated several times (claim, outcome); room on the page keeps those
-- updates HOT, and vacuum runs early so dead versions do not pile up under load.
WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

COMMENT ON TABLE fila_mensagens IS 'Outbound WhatsApp messages: pendente -> processando -> enviada | erro | cancelada';
COMMENT ON COLUMN fila_mensagens.tentativas IS 'Attempts that ended in a retryable or permanent failure; deferrals do not count';
COMMENT ON COLUMN fila_mensagens.worker_id IS 'The worker_heartbeats.id holding the row while processando';
COMMENT ON COLUMN fila_mensagens.outcome IS 'How the last attempt ended (SendOutcome)';

-- The claim: pending rows in priority, then schedule order. Partial, so it holds only the
-- backlog and its cost stays flat however many sent rows the table keeps. Expiry and the
-- "oldest due message" metric read the backlog through it too; every index here is paid
-- for on each enqueue, so there is no second one on pending rows.
CREATE INDEX fila_mensagens_pendentes_idx
    ON fila_mensagens (prioridade DESC, agendar_para, id)
    WHERE status = 'pendente';

-- Rescue of rows held by a dead worker or processing for too long.
CREATE INDEX fila_mensagens_processando_idx
    ON fila_mensagens (worker_id, processando_desde)
    WHERE status = 'processando';

-- Recent outcomes (last-hour counts, retries included) and archiving of terminal rows.
CREATE INDEX fila_mensagens_outcome_at_idx
    ON fila_mensagens (outcome_at)
    WHERE outcome IS NOT NULL;

-- What was sent to a doctor ("the last messages to medico-42").
CREATE INDEX fila_mensagens_cliente_idx
    ON fila_mensagens (cliente_id, created_at DESC);

-- A campaign or a request, found again to report on it or cancel it.
CREATE INDEX fila_mensagens_correlation_idx
    ON fila_mensagens (correlation_id)
    WHERE correlation_id IS NOT NULL;

-- Heartbeats ----------------------------------------------------------------------------------

CREATE TABLE worker_heartbeats (
    id              text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (kind IN ('worker', 'scheduler', 'api', 'all', 'cli')),
    host            text NOT NULL,
    pid             integer NOT NULL CHECK (pid > 0),
    version         text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    in_flight       integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    processed_total bigint NOT NULL DEFAULT 0 CHECK (processed_total >= 0),
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'draining', 'stopped')),
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object')
)
WITH (fillfactor = 50);

COMMENT ON TABLE worker_heartbeats IS 'One row per fila process (worker, scheduler, api), upserted every few seconds';

CREATE INDEX worker_heartbeats_last_seen_idx ON worker_heartbeats (last_seen_at);

-- Job executions ------------------------------------------------------------------------------

CREATE TABLE job_executions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name       text NOT NULL CHECK (job_name ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    scheduled_for  timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'success', 'failed', 'timeout', 'skipped')),
    duration_ms    bigint CHECK (duration_ms >= 0),
    result         jsonb,
    error          text,
    triggered_by   text NOT NULL DEFAULT 'psql'
                   CHECK (triggered_by IN ('scheduler', 'http', 'cli', 'psql')),
    worker_id      text,
    correlation_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),

    -- A failed run may never have started (its process died first, or no job has its name).
    CONSTRAINT job_executions_running_started
        CHECK (status NOT IN ('running', 'success', 'timeout') OR started_at IS NOT NULL),
    CONSTRAINT job_executions_finished
        CHECK (status NOT IN ('success', 'failed', 'timeout', 'skipped') OR finished_at IS NOT NULL)
);

COMMENT ON TABLE job_executions IS 'Every run of a periodic job; INSERT (job_name) VALUES (...) requests a run';
COMMENT ON COLUMN job_executions.status IS 'pending (requested, not started) | running | success | failed | timeout | skipped';

-- One run per schedule slot across every scheduler replica: the slot is claimed by this
-- insert, never decided by a leader.
CREATE UNIQUE INDEX job_executions_slot_idx
    ON job_executions (job_name, scheduled_for)
    WHERE triggered_by = 'scheduler';

CREATE INDEX job_executions_history_idx ON job_executions (job_name, scheduled_for DESC);

CREATE INDEX job_executions_open_idx
    ON job_executions (job_name)
    WHERE status IN ('pending', 'running');

-- Settings ------------------------------------------------------------------------------------

CREATE TABLE app_settings (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z0-9][a-z0-9_.-]*$'),
    value       jsonb NOT NULL,
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT current_user
);

COMMENT ON TABLE app_settings IS 'Thresholds and feature flags (defaults live in code); a change takes effect within a minute';

CREATE FUNCTION app_settings_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.updated_by IS NOT DISTINCT FROM OLD.updated_by THEN
        NEW.updated_by := current_user;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER app_settings_touch
    BEFORE UPDATE ON app_settings
    FOR EACH ROW EXECUTE FUNCTION app_settings_touch();
