-- Chips: the WhatsApp numbers messages go out through (seed T05.1-T05.4, T03.7).
--
-- chips          one row per number: its provider instance, credentials by reference (the
--                NAME of an environment variable, never the secret), its status, daily limit
--                and pacing, the connection state the monitor last saw, and today's count.
-- chip_events    every change of a chip's status or default flag: who, when, why.
-- ops.add_chip / ops.pause_chip / ops.resume_chip / ops.retire_chip   audited changes.
-- ops.chips_uso  usage per chip (today, 7 days, last send, limit, connection, breakers).
--
-- With no chip in the table, a worker sends through the providers configured in its
-- environment (EVOLUTION_*, ZAPI_*), one implicit chip per provider, as before this migration.
-- Once a chip exists, workers send through the table's chips only (within a minute, or at once
-- through the fila_chips notification).
--
-- The daily count and the time of the last send live on the chip's row, so one UPDATE that
-- re-checks the limit and the pacing under the row's lock decides every send: no number of
-- workers can push a chip over its limit or closer than its minimum interval.

CREATE TABLE chips (
    -- Also the chip's circuit breaker name, 'chip.<id>'.
    id                     text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    nome                   text NOT NULL CHECK (length(btrim(nome)) BETWEEN 1 AND 200),
    provider               text NOT NULL CHECK (provider IN ('evolution', 'zapi')),
    -- Evolution: the instance name; Z-API: the instance id.
    instance               text NOT NULL CHECK (length(instance) BETWEEN 1 AND 200),
    -- Evolution: where the API listens (required); Z-API: NULL for https://api.z-api.io.
    base_url               text CHECK (base_url ~ '^https?://'),
    -- Evolution: the variable holding the apikey; Z-API: the variable holding the instance token.
    credential_env         text NOT NULL CHECK (credential_env ~ '^[A-Z_][A-Z0-9_]{0,99}$'),
    -- Z-API only: the variable holding the account's Client-Token.
    client_token_env       text CHECK (client_token_env ~ '^[A-Z_][A-Z0-9_]{0,99}$'),
    telefone               text CHECK (telefone ~ '^[0-9]{8,15}$'),
    status                 text NOT NULL DEFAULT 'ativo' CHECK (status IN ('ativo', 'pausado', 'banido')),
    is_default             boolean NOT NULL DEFAULT false,
    limite_diario          integer NOT NULL DEFAULT 200 CHECK (limite_diario > 0),
    min_intervalo_segundos integer NOT NULL DEFAULT 30 CHECK (min_intervalo_segundos >= 0),
    -- open / connecting / close / refused as the provider says (Z-API: open or close);
    -- unknown: never checked, or the provider did not answer the last check.
    connection_state       text NOT NULL DEFAULT 'unknown'
                           CHECK (connection_state IN ('open', 'connecting', 'close', 'refused', 'unknown')),
    connection_checked_at  timestamptz,
    -- The last state a provider reported (never 'unknown'), and since when it has reported it:
    -- a check that got no answer in between does not restart the count.
    connection_known_state text CHECK (connection_known_state IN ('open', 'connecting', 'close', 'refused')),
    connection_since       timestamptz,
    -- What the provider said at the last check, for a person (never a secret).
    connection_detail      text,
    -- Sends reserved on uso_dia (the calendar day in the workers' time zone).
    uso_dia                date,
    uso_hoje               integer NOT NULL DEFAULT 0 CHECK (uso_hoje >= 0),
    ultimo_envio_at        timestamptz,
    -- The earliest next send: the last send plus the minimum interval and its jitter.
    proximo_envio_at       timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),

    UNIQUE (provider, instance),
    CONSTRAINT chips_evolution_url CHECK (provider <> 'evolution' OR base_url IS NOT NULL),
    CONSTRAINT chips_zapi_client_token CHECK (provider <> 'zapi' OR client_token_env IS NOT NULL),
    CONSTRAINT chips_default_active CHECK (NOT is_default OR status <> 'banido')
);

COMMENT ON TABLE chips IS
    'WhatsApp numbers to send through (seed T05). Add, pause, resume and retire with ops.add_chip / ops.pause_chip / ops.resume_chip / ops.retire_chip';
COMMENT ON COLUMN chips.credential_env IS
    'Name of the environment variable holding the secret (Evolution apikey, Z-API instance token); the secret itself is never stored';
COMMENT ON COLUMN chips.uso_hoje IS 'Sends reserved on uso_dia; reset by the first send of a new day';

-- At most one default chip: the fallback when selection finds none (T05.3).
CREATE UNIQUE INDEX chips_one_default ON chips (is_default) WHERE is_default;

CREATE TABLE chip_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chip_id    text NOT NULL,
    acao       text NOT NULL CHECK (acao IN ('added', 'status', 'default', 'removed')),
    de         text,
    para       text,
    motivo     text NOT NULL,
    feito_por  text NOT NULL DEFAULT session_user,
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE chip_events IS 'Every chip added, removed, paused, resumed or retired, and default changes: who and why';

CREATE INDEX chip_events_chip_idx ON chip_events (chip_id, created_at DESC);

-- Audit every change, whether through the ops functions (which pass their motivo in the
-- transaction-local setting fila.chip_motivo) or by hand.
CREATE FUNCTION chips_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    why text := coalesce(nullif(current_setting('fila.chip_motivo', true), ''), 'changed by hand');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chip_events (chip_id, acao, para, motivo) VALUES (NEW.id, 'added', NEW.status, why);
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO chip_events (chip_id, acao, de, motivo) VALUES (OLD.id, 'removed', OLD.status, why);
        RETURN OLD;
    END IF;
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO chip_events (chip_id, acao, de, para, motivo) VALUES (NEW.id, 'status', OLD.status, NEW.status, why);
    END IF;
    IF OLD.is_default IS DISTINCT FROM NEW.is_default THEN
        INSERT INTO chip_events (chip_id, acao, de, para, motivo)
        VALUES (NEW.id, 'default', OLD.is_default::text, NEW.is_default::text, why);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER chips_audit AFTER INSERT OR UPDATE OR DELETE ON chips
    FOR EACH ROW EXECUTE FUNCTION chips_audit();

CREATE FUNCTION chips_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER chips_touch BEFORE UPDATE ON chips
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION chips_touch();

-- Workers refresh their list of eligible chips at once when a chip is added, removed or
-- changes what makes it eligible; a send (uso_hoje, ultimo_envio_at) notifies nobody.
CREATE FUNCTION chips_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fila_chips', coalesce(NEW.id, OLD.id));
    RETURN NULL;
END;
$$;

CREATE TRIGGER chips_notify_insert_delete AFTER INSERT OR DELETE ON chips
    FOR EACH ROW EXECUTE FUNCTION chips_notify();

CREATE TRIGGER chips_notify_update AFTER UPDATE ON chips
    FOR EACH ROW
    WHEN ((OLD.nome, OLD.provider, OLD.instance, OLD.base_url, OLD.credential_env, OLD.client_token_env,
           OLD.status, OLD.is_default, OLD.limite_diario, OLD.min_intervalo_segundos, OLD.connection_state)
          IS DISTINCT FROM
          (NEW.nome, NEW.provider, NEW.instance, NEW.base_url, NEW.credential_env, NEW.client_token_env,
           NEW.status, NEW.is_default, NEW.limite_diario, NEW.min_intervalo_segundos, NEW.connection_state))
    EXECUTE FUNCTION chips_notify();

-- Ops functions ------------------------------------------------------------------------------

-- SELECT ops.add_chip('clinica-1', 'Clínica 1', 'evolution', 'clinica1', 'EVOLUTION_API_KEY',
--                     base_url => 'http://evolution:8080', motivo => 'new number');
CREATE FUNCTION ops.add_chip(
    id text, nome text, provider text, instance text, credential_env text,
    base_url text DEFAULT NULL, client_token_env text DEFAULT NULL, telefone text DEFAULT NULL,
    limite_diario integer DEFAULT 200, min_intervalo_segundos integer DEFAULT 30,
    is_default boolean DEFAULT false, motivo text DEFAULT NULL
) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    result chips;
BEGIN
    IF motivo IS NULL OR length(btrim(motivo)) = 0 THEN
        RAISE EXCEPTION 'a motivo is required' USING ERRCODE = '22023';
    END IF;
    IF add_chip.id IS NULL OR add_chip.id !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'id must be 1-63 of a-z 0-9 _ - starting with a letter or digit, not %', add_chip.id
            USING ERRCODE = '22023';
    END IF;
    IF add_chip.provider IS NULL OR add_chip.provider NOT IN ('evolution', 'zapi') THEN
        RAISE EXCEPTION 'provider must be evolution or zapi, not %', add_chip.provider USING ERRCODE = '22023';
    END IF;
    IF add_chip.provider = 'evolution' AND add_chip.base_url IS NULL THEN
        RAISE EXCEPTION 'an evolution chip needs base_url' USING ERRCODE = '22023';
    END IF;
    IF add_chip.provider = 'zapi' AND add_chip.client_token_env IS NULL THEN
        RAISE EXCEPTION 'a zapi chip needs client_token_env' USING ERRCODE = '22023';
    END IF;
    IF add_chip.credential_env IS NULL OR add_chip.credential_env !~ '^[A-Z_][A-Z0-9_]{0,99}$' THEN
        RAISE EXCEPTION 'credential_env is the NAME of an environment variable (A-Z 0-9 _), not %', add_chip.credential_env
            USING ERRCODE = '22023';
    END IF;
    IF add_chip.limite_diario IS NULL OR add_chip.limite_diario <= 0
       OR add_chip.min_intervalo_segundos IS NULL OR add_chip.min_intervalo_segundos < 0 THEN
        RAISE EXCEPTION 'limite_diario must be positive and min_intervalo_segundos not negative' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('fila.chip_motivo', motivo, true);
    INSERT INTO chips (id, nome, provider, instance, base_url, credential_env, client_token_env, telefone,
                       limite_diario, min_intervalo_segundos, is_default)
    VALUES (add_chip.id, add_chip.nome, add_chip.provider, add_chip.instance, add_chip.base_url,
            add_chip.credential_env, add_chip.client_token_env, add_chip.telefone,
            add_chip.limite_diario, add_chip.min_intervalo_segundos, coalesce(add_chip.is_default, false))
    RETURNING * INTO result;
    PERFORM set_config('fila.chip_motivo', '', true);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.add_chip(text, text, text, text, text, text, text, text, integer, integer, boolean, text) IS
    'Adds a chip (audited in chip_events); workers use it within a minute, at once when they hear fila_chips';

-- The status change behind pause/resume/retire.
CREATE FUNCTION ops.set_chip_status(chip text, new_status text, motivo text) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    result chips;
BEGIN
    IF motivo IS NULL OR length(btrim(motivo)) = 0 THEN
        RAISE EXCEPTION 'a motivo is required' USING ERRCODE = '22023';
    END IF;
    IF new_status IS NULL OR new_status NOT IN ('ativo', 'pausado', 'banido') THEN
        RAISE EXCEPTION 'status must be ativo, pausado or banido, not %', new_status USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('fila.chip_motivo', motivo, true);
    UPDATE chips c
       SET status = new_status,
           -- A retired chip cannot stay the default.
           is_default = c.is_default AND new_status <> 'banido'
     WHERE c.id = chip
    RETURNING * INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no chip %', chip USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('fila.chip_motivo', '', true);
    RETURN result;
END;
$$;

-- SELECT ops.pause_chip('clinica-1', 'too many blocks this week');
CREATE FUNCTION ops.pause_chip(chip text, motivo text) RETURNS chips
LANGUAGE sql AS $$ SELECT ops.set_chip_status(chip, 'pausado', motivo) $$;

-- SELECT ops.resume_chip('clinica-1', 'blocks cleared');
CREATE FUNCTION ops.resume_chip(chip text, motivo text) RETURNS chips
LANGUAGE sql AS $$ SELECT ops.set_chip_status(chip, 'ativo', motivo) $$;

-- SELECT ops.retire_chip('clinica-1', 'number banned by WhatsApp');
CREATE FUNCTION ops.retire_chip(chip text, motivo text) RETURNS chips
LANGUAGE sql AS $$ SELECT ops.set_chip_status(chip, 'banido', motivo) $$;

COMMENT ON FUNCTION ops.pause_chip(text, text) IS 'Stops sending through a chip until ops.resume_chip (audited)';
COMMENT ON FUNCTION ops.retire_chip(text, text) IS 'Takes a chip out of service for good: status banido, no longer the default (audited)';

-- Usage ---------------------------------------------------------------------------------------

-- Sends and failures per chip; the breaker state is the worst any live process reports for
-- the chip's circuit ('chip.<id>'), CLOSED when none reports it.
CREATE VIEW ops.chips_uso AS
SELECT c.id, c.nome, c.provider, c.status, c.is_default,
       coalesce(m.enviadas_hoje, 0) AS enviadas_hoje,
       coalesce(m.falhas_hoje, 0) AS falhas_hoje,
       coalesce(m.enviadas_7d, 0) AS enviadas_7d,
       coalesce(m.falhas_7d, 0) AS falhas_7d,
       c.ultimo_envio_at,
       -- The count of uso_dia (a day in the workers' time zone); a past day means none today.
       c.uso_dia, c.uso_hoje,
       c.limite_diario,
       c.min_intervalo_segundos,
       c.connection_state, c.connection_since, c.connection_checked_at,
       coalesce(b.state, 'CLOSED') AS circuit_state
  FROM chips c
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE f.status = 'enviada' AND f.enviada_em >= date_trunc('day', now())) AS enviadas_hoje,
               count(*) FILTER (WHERE f.outcome LIKE 'FAILED_%' AND f.outcome_at >= date_trunc('day', now())) AS falhas_hoje,
               count(*) FILTER (WHERE f.status = 'enviada') AS enviadas_7d,
               count(*) FILTER (WHERE f.outcome LIKE 'FAILED_%') AS falhas_7d
          FROM fila_mensagens f
         WHERE f.chip_id = c.id AND f.outcome_at >= now() - interval '7 days'
  ) m ON true
  LEFT JOIN LATERAL (
        SELECT s.state FROM ops.circuit_states s
         WHERE s.circuit_name = 'chip.' || c.id
         ORDER BY CASE s.state WHEN 'FORCED_OPEN' THEN 0 WHEN 'OPEN' THEN 1 WHEN 'HALF_OPEN' THEN 2 ELSE 3 END
         LIMIT 1
  ) b ON true;

COMMENT ON VIEW ops.chips_uso IS
    'Usage per chip: sends and failures today and in 7 days, last send, today''s count against the limit, connection and breaker state. SELECT * FROM ops.chips_uso;';

CREATE INDEX fila_mensagens_chip_idx ON fila_mensagens (chip_id, outcome_at) WHERE chip_id IS NOT NULL;
