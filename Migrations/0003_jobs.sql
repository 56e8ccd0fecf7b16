-- 0003_jobs: the periodic job runner's catalogue, metric snapshots and the message archive.
--
-- job_definitions        one row per job, synced from code at start-up; `enabled` and the
--                        thresholds are yours to change with psql, the scheduler obeys
--                        within seconds
-- metrics_snapshots      sampled metrics, one row per metric per snapshot (seed T03.2)
-- fila_mensagens_arquivo terminal messages moved out of the hot table by arquivar-fila

CREATE TABLE job_definitions (
    name               text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,99}$'),
    schedule           text NOT NULL,
    time_zone          text NOT NULL,
    description        text NOT NULL DEFAULT '',
    sla_seconds        integer NOT NULL CHECK (sla_seconds > 0),
    late_after_seconds integer NOT NULL CHECK (late_after_seconds > 0),
    timeout_seconds    integer NOT NULL CHECK (timeout_seconds > 0),
    enabled            boolean NOT NULL DEFAULT true,
    next_run_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    synced_at          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE job_definitions IS 'Periodic jobs, synced from code; UPDATE job_definitions SET enabled = false WHERE name = ... stops a job on every replica';
COMMENT ON COLUMN job_definitions.schedule IS 'every N(s|m|h|d), aligned to the epoch, or cron M H DoM Mon DoW in time_zone';
COMMENT ON COLUMN job_definitions.sla_seconds IS 'A run longer than this is over its SLA';
COMMENT ON COLUMN job_definitions.late_after_seconds IS 'The job is late when its last success is older than this (default: twice its interval)';
COMMENT ON COLUMN job_definitions.next_run_at IS 'The next slot; claimed by the replica that advances it';

-- "When did this job last succeed?" (GET /jobs, verificar-jobs-atrasados, every minute).
CREATE INDEX job_executions_success_idx
    ON job_executions (job_name, finished_at DESC)
    WHERE status = 'success';

-- Runs requested with psql wait as 'pending' until a scheduler takes them.
CREATE INDEX job_executions_requested_idx
    ON job_executions (created_at)
    WHERE status = 'pending';

-- Metric snapshots (seed T03.2) -------------------------------------------------------------

CREATE TABLE metrics_snapshots (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    metric_name text NOT NULL,
    value       numeric NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_metrics_name_time ON metrics_snapshots (metric_name, created_at DESC);
CREATE INDEX metrics_snapshots_created_idx ON metrics_snapshots (created_at);

COMMENT ON TABLE metrics_snapshots IS 'Sampled metrics every 5 minutes (snapshot-metricas), kept 7 days (limpar-metricas-antigas)';

-- Archive -----------------------------------------------------------------------------------

CREATE TABLE fila_mensagens_arquivo (LIKE fila_mensagens INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE fila_mensagens_arquivo ADD PRIMARY KEY (id);
ALTER TABLE fila_mensagens_arquivo ADD COLUMN arquivada_em timestamptz NOT NULL DEFAULT now();
CREATE INDEX fila_mensagens_arquivo_created_idx ON fila_mensagens_arquivo (created_at);
CREATE INDEX fila_mensagens_arquivo_cliente_idx ON fila_mensagens_arquivo (cliente_id, created_at DESC);

COMMENT ON TABLE fila_mensagens_arquivo IS 'Terminal fila_mensagens rows past the retention period, moved here in batches by arquivar-fila';
