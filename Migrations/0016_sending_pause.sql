-- 0016_sending_pause: stop all sending with one psql call, and start it again.
--
-- ops.pause_sending(motivo, duracao)   every worker stops claiming within seconds (NOTIFY
--                                      fila_pausa; a worker that missed it polls every 15 s),
--                                      until ops.resume_sending or, with a duracao, until it
--                                      runs out. Messages already in a worker's hands finish.
-- ops.resume_sending(motivo)           ends the pause.
-- ops.pausa_envios                     the pause in force, if any: who, why, since, until.
--
-- The pause is the app_settings row 'sending.pause' ({"motivo", "por", "desde", "ate"}), so it
-- survives restarts and every replica reads the same one. Both calls are audited in ops_audit.

-- A time from text, or NULL when the text is not one (a hand edit of 'ate' must not make the
-- pause unreadable: a bad end counts as none, and ops.resume_sending still ends it).
CREATE FUNCTION fila_try_timestamptz(p_text text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN p_text::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;

CREATE FUNCTION fila_sending_pause() RETURNS jsonb
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT s.value FROM app_settings s
     WHERE s.key = 'sending.pause'
       AND jsonb_typeof(s.value) = 'object'
       AND (fila_try_timestamptz(s.value->>'ate') IS NULL OR fila_try_timestamptz(s.value->>'ate') > now())
$$;

COMMENT ON FUNCTION fila_sending_pause() IS
    'The sending pause in force ({"motivo", "por", "desde", "ate"}), or NULL: what every worker reads before claiming';

-- SELECT ops.pause_sending('wrong template in campanha-7', interval '30 minutes');
CREATE FUNCTION ops.pause_sending(motivo text, duracao interval DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'pause sending');
    pause jsonb;
BEGIN
    IF duracao IS NOT NULL AND (duracao <= interval '0' OR duracao > interval '30 days') THEN
        RAISE EXCEPTION 'duracao must be more than 0 and at most 30 days (got %), or NULL to pause until ops.resume_sending', duracao
            USING ERRCODE = '22023';
    END IF;
    pause := jsonb_build_object('motivo', why, 'por', session_user, 'desde', now(), 'ate', now() + duracao);
    INSERT INTO app_settings (key, value, description)
    VALUES ('sending.pause', pause, 'set by ops.pause_sending; ended by ops.resume_sending')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, description = excluded.description;
    PERFORM fila_ops_record('pause_sending', jsonb_build_object('duracao', duracao::text), why, 1);
    PERFORM pg_notify('fila_pausa', '');
    RETURN pause;
END;
$$;

COMMENT ON FUNCTION ops.pause_sending(text, interval) IS
    'Stops every worker from claiming within seconds, until ops.resume_sending (or for duracao); messages already claimed finish. Audited';

-- SELECT ops.resume_sending('template fixed');
CREATE FUNCTION ops.resume_sending(motivo text) RETURNS jsonb
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'resume sending');
    pause jsonb := fila_sending_pause();
BEGIN
    IF pause IS NULL THEN
        RAISE EXCEPTION 'sending is not paused' USING ERRCODE = '22023';
    END IF;
    DELETE FROM app_settings WHERE key = 'sending.pause';
    PERFORM fila_ops_record('resume_sending', jsonb_build_object('pausa', pause), why, 1);
    PERFORM pg_notify('fila_pausa', '');
    RETURN pause;
END;
$$;

COMMENT ON FUNCTION ops.resume_sending(text) IS
    'Ends the sending pause (workers claim again within seconds) and returns it. Audited';

CREATE VIEW ops.pausa_envios AS
SELECT p->>'motivo' AS motivo, p->>'por' AS por, fila_try_timestamptz(p->>'desde') AS desde, fila_try_timestamptz(p->>'ate') AS ate
  FROM (SELECT fila_sending_pause() AS p) x
 WHERE p IS NOT NULL;

COMMENT ON VIEW ops.pausa_envios IS
    'The sending pause in force, if any (no row: workers send). SELECT * FROM ops.pausa_envios;';
