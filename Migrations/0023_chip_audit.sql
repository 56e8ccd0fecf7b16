-- 0023_chip_audit: adding a chip and changing its status are in ops_audit, as every other
-- intervention through an ops function is.
--
-- ops.add_chip and ops.set_chip_status (behind ops.pause_chip, ops.resume_chip and
-- ops.retire_chip) wrote chip_events only, so `SELECT * FROM ops.audit` did not show an
-- operator pausing or retiring a chip. They now also write an ops_audit row, and take their
-- motivo as every ops function does (1-1000 characters, trimmed). chip_events keeps its
-- row for every change, psql's included.

CREATE OR REPLACE FUNCTION ops.add_chip(
    id text, nome text, provider text, instance text, credential_env text,
    base_url text DEFAULT NULL, client_token_env text DEFAULT NULL, telefone text DEFAULT NULL,
    limite_diario integer DEFAULT 200, min_intervalo_segundos integer DEFAULT 30,
    is_default boolean DEFAULT false, motivo text DEFAULT NULL
) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'add this chip');
    result chips;
BEGIN
    IF add_chip.id IS NULL OR add_chip.id !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'id must be 1-63 of a-z 0-9 _ - starting with a letter or digit, not %', add_chip.id
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM chips c WHERE c.id = add_chip.id) THEN
        RAISE EXCEPTION 'chip % already exists', add_chip.id
            USING ERRCODE = '22023', HINT = 'SELECT * FROM ops.chips_uso; change it with ops.set_chip_limits, ops.pause_chip or ops.resume_chip';
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
    PERFORM set_config('fila.chip_motivo', why, true);
    INSERT INTO chips (id, nome, provider, instance, base_url, credential_env, client_token_env, telefone,
                       limite_diario, min_intervalo_segundos, is_default)
    VALUES (add_chip.id, add_chip.nome, add_chip.provider, add_chip.instance, add_chip.base_url,
            add_chip.credential_env, add_chip.client_token_env, add_chip.telefone,
            add_chip.limite_diario, add_chip.min_intervalo_segundos, coalesce(add_chip.is_default, false))
    RETURNING * INTO result;
    PERFORM set_config('fila.chip_motivo', '', true);
    PERFORM fila_ops_record('add_chip', jsonb_build_object('chip', result.id, 'provider', result.provider), why, 1);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.add_chip(text, text, text, text, text, text, text, text, integer, integer, boolean, text) IS
    'Adds a chip (audited in chip_events and ops_audit); workers use it within a minute, at once when they hear fila_chips';

CREATE OR REPLACE FUNCTION ops.set_chip_status(chip text, new_status text, motivo text) RETURNS chips
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'change this chip''s status');
    result chips;
BEGIN
    IF new_status IS NULL OR new_status NOT IN ('ativo', 'pausado', 'banido') THEN
        RAISE EXCEPTION 'status must be ativo, pausado or banido, not %', new_status USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('fila.chip_motivo', why, true);
    UPDATE chips c
       SET status = new_status,
           -- A retired chip cannot stay the default.
           is_default = c.is_default AND new_status <> 'banido'
     WHERE c.id = chip
    RETURNING * INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no chip %', chip USING ERRCODE = '22023', HINT = 'SELECT id, status FROM chips ORDER BY id;';
    END IF;
    PERFORM set_config('fila.chip_motivo', '', true);
    PERFORM fila_ops_record('set_chip_status', jsonb_build_object('chip', result.id, 'status', new_status), why, 1);
    RETURN result;
END;
$$;

COMMENT ON FUNCTION ops.set_chip_status(text, text, text) IS
    'Sets a chip''s status (ativo, pausado, banido; a retired chip stops being the default). Audited in chip_events and ops_audit';

SELECT fila_grant_roles();
