-- 0018_settings_catalog: every app_settings key Fila reads, with its type, range and default,
-- and ops.set_setting to change one with those checked and the change audited.
--
-- app_settings_catalog     one row per key, or per key pattern (alert.<rule>.cooldown_seconds)
-- ops.settings             every known setting with its value in force (or its default)
-- ops.set_setting(key, value, motivo)   validated against the catalog; audited; NULL value
--                                       removes the row (the default applies again)
--
-- A plain INSERT or UPDATE of app_settings still works; a value the code cannot use is
-- ignored (the default applies) and named in the log or the job's result.

CREATE TABLE app_settings_catalog (
    -- A key, or a regular expression matching keys (anchored), e.g. ^alert\.[a-z0-9_]+\.cooldown_seconds$
    chave     text PRIMARY KEY,
    padrao_re boolean NOT NULL DEFAULT false,
    tipo      text NOT NULL CHECK (tipo IN ('integer', 'boolean', 'object_of_integers', 'time_zone')),
    minimo    bigint,
    maximo    bigint,
    padrao    jsonb,
    descricao text NOT NULL
);

COMMENT ON TABLE app_settings_catalog IS
    'The app_settings keys Fila reads, with type, range and default (ops.set_setting checks against it). SELECT * FROM ops.settings;';

INSERT INTO app_settings_catalog (chave, padrao_re, tipo, minimo, maximo, padrao, descricao) VALUES
    ('rate_limit.daily_budget', false, 'integer', 0, 1000000, '3', 'weight a doctor may receive per day (T04.1)'),
    ('rate_limit.weights', false, 'object_of_integers', 0, 1000000, '{"campanha": 2, "followup": 1, "sistema": 1, "resposta": 0}', 'weight per message kind, e.g. {"campanha": 1, "resposta": 0}'),
    ('rate_limit.time_zone', false, 'time_zone', NULL, NULL, '"America/Sao_Paulo"', 'the zone whose calendar day a budget covers'),
    ('rate_limit.deferral_spread_seconds', false, 'integer', 0, 86400, '600', 'spread of rate-limited messages over the next window'),
    ('guardrail.contact_cap_7d.enabled', false, 'boolean', NULL, NULL, 'true', 'at most N campaign contacts per doctor in 7 days (T06.1)'),
    ('guardrail.contact_cap_7d.limit', false, 'integer', 0, 1000, '2', 'N of contact_cap_7d'),
    ('heartbeat.timeout_seconds', false, 'integer', 30, 86400, '120', 'a process silent this long is dead (rescue, liveness)'),
    ('alert.evaluation_interval_seconds', false, 'integer', 1, 600, '60', 'how often every process evaluates the alert rules'),
    ('^alert\.[a-z0-9_]+\.cooldown_seconds$', true, 'integer', 1, 604800, NULL, 'how long a condition that keeps firing stays quiet after a notification'),
    ('^alert\.[a-z0-9_]+\.resolve_after_seconds$', true, 'integer', 0, 86400, '120', 'how long a condition must stay clear before it is resolved'),
    ('alert.fila_acumulada.limit', false, 'integer', 0, 10000000, '50', 'messages due for over alert.fila_acumulada.minutes that make a backlog'),
    ('alert.fila_acumulada.minutes', false, 'integer', 0, 10080, '30', 'how long a message must have been due to count in a backlog'),
    ('alert.erros_acumulados.limit', false, 'integer', 0, 1000000, '10', 'send errors in the window that raise erros_acumulados'),
    ('alert.erros_acumulados.window_seconds', false, 'integer', 60, 86400, '300', 'the window of erros_acumulados'),
    ('alert.mensagens_nao_enviadas.window_seconds', false, 'integer', 60, 86400, '1200', 'the window of mensagens_nao_enviadas'),
    ('alert.worker_sem_heartbeat.due_seconds', false, 'integer', 0, 86400, '120', 'how long messages may be due with no live worker'),
    ('alert.scheduler_sem_heartbeat.after_seconds', false, 'integer', 10, 86400, '120', 'how long with no live scheduler before the alert'),
    ('alert.circuito_aberto.after_seconds', false, 'integer', 10, 86400, '600', 'how long a circuit may stay open before the alert'),
    ('alert.whatsapp_desconectado.seconds', false, 'integer', 1, 604800, '300', 'how long a chip may be disconnected before the alert'),
    ('retention.job_executions_days', false, 'integer', 1, 3650, '30', 'job runs kept (limpar-historico)'),
    ('retention.worker_heartbeats_hours', false, 'integer', 1, 87600, '24', 'heartbeats of processes gone kept (limpar-historico)'),
    ('retention.alert_events_days', false, 'integer', 1, 3650, '365', 'delivered alert events kept (limpar-historico)'),
    ('retention.ops_audit_days', false, 'integer', 1, 3650, '365', 'ops_audit rows kept (limpar-historico)');

-- The catalog row for a key: the exact key first, else the first pattern that matches.
CREATE FUNCTION fila_setting_rule(p_key text) RETURNS app_settings_catalog
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT c.* FROM app_settings_catalog c
     WHERE (NOT c.padrao_re AND c.chave = p_key) OR (c.padrao_re AND p_key ~ c.chave)
     ORDER BY c.padrao_re, c.chave
     LIMIT 1
$$;

-- SELECT ops.set_setting('guardrail.contact_cap_7d.limit', '3', 'the team agreed on 3 a week');
CREATE FUNCTION ops.set_setting(key text, value jsonb, motivo text) RETURNS app_settings
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'change the setting');
    rule app_settings_catalog := fila_setting_rule(set_setting.key);
    previous jsonb;
    result app_settings;
    number numeric;
BEGIN
    IF set_setting.key = 'sending.pause' THEN
        RAISE EXCEPTION 'sending.pause is set by ops.pause_sending and ops.resume_sending' USING ERRCODE = '22023';
    ELSIF rule.chave IS NULL THEN
        RAISE EXCEPTION 'unknown setting %', coalesce(set_setting.key, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT chave, tipo, minimo, maximo, descricao FROM ops.settings; lists them';
    END IF;
    IF set_setting.value IS NOT NULL THEN
        IF rule.tipo = 'integer' THEN
            IF jsonb_typeof(set_setting.value) <> 'number' OR (set_setting.value::text)::numeric % 1 <> 0 THEN
                RAISE EXCEPTION '% must be a whole number (% to %)', set_setting.key, rule.minimo, rule.maximo USING ERRCODE = '22023';
            END IF;
            number := (set_setting.value::text)::numeric;
            IF number < rule.minimo OR number > rule.maximo THEN
                RAISE EXCEPTION '% must be between % and % (got %)', set_setting.key, rule.minimo, rule.maximo, number USING ERRCODE = '22023';
            END IF;
        ELSIF rule.tipo = 'boolean' AND jsonb_typeof(set_setting.value) <> 'boolean' THEN
            RAISE EXCEPTION '% must be true or false', set_setting.key USING ERRCODE = '22023';
        ELSIF rule.tipo = 'time_zone' AND (jsonb_typeof(set_setting.value) <> 'string'
              OR NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = set_setting.value #>> '{}')) THEN
            RAISE EXCEPTION '% must be a time zone name such as "America/Sao_Paulo"', set_setting.key USING ERRCODE = '22023';
        ELSIF rule.tipo = 'object_of_integers' AND (jsonb_typeof(set_setting.value) <> 'object' OR EXISTS (
              SELECT 1 FROM jsonb_each(set_setting.value) e
               WHERE jsonb_typeof(e.value) <> 'number' OR (e.value::text)::numeric % 1 <> 0
                  OR (e.value::text)::numeric NOT BETWEEN rule.minimo AND rule.maximo)) THEN
            RAISE EXCEPTION '% must be a JSON object of whole numbers % to %', set_setting.key, rule.minimo, rule.maximo USING ERRCODE = '22023';
        END IF;
    END IF;
    SELECT s.value INTO previous FROM app_settings s WHERE s.key = set_setting.key;
    IF set_setting.value IS NULL THEN
        DELETE FROM app_settings s WHERE s.key = set_setting.key RETURNING * INTO result;
    ELSE
        INSERT INTO app_settings AS s (key, value, description, updated_by)
        VALUES (set_setting.key, set_setting.value, why, session_user)
        ON CONFLICT ON CONSTRAINT app_settings_pkey
        DO UPDATE SET value = excluded.value, description = excluded.description, updated_by = excluded.updated_by
        RETURNING * INTO result;
    END IF;
    PERFORM fila_ops_record('set_setting',
        jsonb_build_object('key', set_setting.key, 'de', previous, 'para', set_setting.value), why, CASE WHEN result.key IS NULL THEN 0 ELSE 1 END);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.set_setting(text, jsonb, text) IS
    'Sets an app_settings value after checking it against app_settings_catalog (SQLSTATE 22023 for an unknown key or a bad value); NULL removes it (the default applies). Audited with the old and new value';

CREATE VIEW ops.settings AS
SELECT c.chave, c.tipo, c.minimo, c.maximo, c.padrao, s.value AS valor, s.updated_at, s.updated_by, c.descricao
  FROM app_settings_catalog c
  LEFT JOIN app_settings s ON NOT c.padrao_re AND s.key = c.chave
UNION ALL
SELECT s.key, c.tipo, c.minimo, c.maximo, c.padrao, s.value, s.updated_at, s.updated_by, c.descricao
  FROM app_settings s
  JOIN app_settings_catalog c ON c.padrao_re AND s.key ~ c.chave
 ORDER BY 1;

COMMENT ON VIEW ops.settings IS
    'Every setting Fila reads: type, range, default and the value in force (valor NULL: the default). Patterns (alert.<rule>.cooldown_seconds) show once, and again per key set. SELECT * FROM ops.settings;';
