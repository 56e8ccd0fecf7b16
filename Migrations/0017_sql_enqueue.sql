-- 0017_sql_enqueue: enqueue from SQL, for producers in any language (the transactional outbox).
--
-- fila.enqueue(cliente_id, telefone, conteudo, tipo, …)   one message; returns (id, inserted)
-- fila.enqueue_batch(mensagens jsonb)                a JSON array of messages; all or nothing
--
-- The same rules as `fila enqueue` and the HTTP API: each field checked with a clear error
-- (SQLSTATE 22023, "field: reason", nothing written), an idempotency_key already in the table
-- returns the existing row's id with inserted = false, and idle workers are woken by the
-- table's statement trigger (one NOTIFY per statement, delivered at commit). Called inside the
-- producer's own transaction, a message exists exactly when the producer's business row does.
-- Ids are time-ordered (UUID version 7), as `fila enqueue` makes them.

CREATE SCHEMA IF NOT EXISTS fila;
COMMENT ON SCHEMA fila IS 'Functions for producers: fila.enqueue, fila.enqueue_batch';

-- UUID version 7: 48 bits of Unix milliseconds, the version, then random bits (RFC 9562).
CREATE FUNCTION fila_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT encode(
        set_bit(set_bit(set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1), 54, 1), 55, 0),
        'hex')::uuid
$$;

COMMENT ON FUNCTION fila_uuid_v7() IS 'A time-ordered message id (UUID version 7), as fila enqueue makes them';

-- Every rule fila enqueue checks, field by field; raises 22023 "field: reason" (prefixed with
-- the message's position in a batch).
CREATE FUNCTION fila_enqueue_check(
    p_cliente_id text, p_telefone text, p_conteudo text, p_tipo text, p_prioridade integer,
    p_max_tentativas integer, p_idempotency_key text, p_correlation_id text, p_metadata jsonb, p_where text
) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
DECLARE
    problem text;
BEGIN
    IF p_cliente_id IS NULL OR length(p_cliente_id) NOT BETWEEN 1 AND 200 THEN
        problem := 'cliente_id: must be 1-200 characters';
    ELSIF p_telefone IS NULL OR p_telefone !~ '^[0-9]{10,15}$' THEN
        problem := 'telefone: must be 10-15 digits with the country code, e.g. 5511999990000';
    ELSIF p_conteudo IS NULL OR p_conteudo ~ '^[[:space:]]*$' THEN
        problem := 'conteudo: is empty';
    ELSIF length(p_conteudo) > 4096 THEN
        problem := 'conteudo: is longer than 4096 characters';
    ELSIF p_tipo IS NULL THEN
        -- Required, as in fila enqueue: it decides the rate-limit weight and the contact cap,
        -- and a campaign must not slip through as replies by default.
        problem := 'tipo: is missing (one of resposta, campanha, followup, sistema)';
    ELSIF p_tipo NOT IN ('resposta', 'campanha', 'followup', 'sistema') THEN
        problem := 'tipo: must be resposta, campanha, followup or sistema';
    ELSIF p_prioridade IS NULL OR p_prioridade NOT BETWEEN -100 AND 100 THEN
        problem := 'prioridade: must be between -100 and 100';
    ELSIF p_max_tentativas IS NULL OR p_max_tentativas NOT BETWEEN 1 AND 100 THEN
        problem := 'max_tentativas: must be between 1 and 100';
    ELSIF p_idempotency_key IS NOT NULL AND length(p_idempotency_key) NOT BETWEEN 1 AND 200 THEN
        problem := 'idempotency_key: must be 1-200 characters';
    ELSIF p_correlation_id IS NOT NULL AND p_correlation_id <> '' AND p_correlation_id !~ '^[A-Za-z0-9_.:/@+=-]{1,128}$' THEN
        problem := 'correlation_id: must be 1-128 characters from A-Z a-z 0-9 and +-./:=@_';
    ELSIF p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN
        problem := 'metadata: must be a JSON object';
    ELSIF octet_length(p_metadata::text) > 16384 THEN
        problem := 'metadata: is larger than 16384 bytes';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', coalesce(p_where, '') || problem USING ERRCODE = '22023';
    END IF;
END;
$$;

-- SELECT * FROM fila.enqueue('medico-42', '5511999990000', 'Olá, doutor', 'resposta', idempotency_key => 'pedido-981');
CREATE FUNCTION fila.enqueue(
    cliente_id text, telefone text, conteudo text, tipo text,
    prioridade integer DEFAULT 0, agendar_para timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL, correlation_id text DEFAULT NULL, metadata jsonb DEFAULT '{}',
    max_tentativas integer DEFAULT 3
) RETURNS TABLE (id uuid, inserted boolean)
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM fila_enqueue_check(enqueue.cliente_id, enqueue.telefone, enqueue.conteudo, enqueue.tipo, enqueue.prioridade,
                               enqueue.max_tentativas, enqueue.idempotency_key, enqueue.correlation_id, enqueue.metadata, NULL);
    IF NOT isfinite(coalesce(enqueue.agendar_para, now())) THEN
        RAISE EXCEPTION 'agendar_para: must be a finite time (infinity would never come due)' USING ERRCODE = '22023';
    END IF;
    INSERT INTO fila_mensagens AS m (id, cliente_id, telefone, conteudo, tipo, prioridade, agendar_para,
                                     idempotency_key, correlation_id, metadata, max_tentativas)
    VALUES (fila_uuid_v7(), enqueue.cliente_id, enqueue.telefone, enqueue.conteudo, enqueue.tipo, enqueue.prioridade,
            coalesce(enqueue.agendar_para, now()), enqueue.idempotency_key, nullif(enqueue.correlation_id, ''),
            enqueue.metadata, enqueue.max_tentativas)
    ON CONFLICT ON CONSTRAINT fila_mensagens_idempotency_key_key DO NOTHING
    RETURNING m.id INTO new_id;
    IF new_id IS NOT NULL THEN
        RETURN QUERY SELECT new_id, true;
    ELSE
        -- The key is taken (by a row committed meanwhile, at worst): that row is the message.
        RETURN QUERY SELECT f.id, false FROM fila_mensagens f WHERE f.idempotency_key = enqueue.idempotency_key;
    END IF;
END;
$$;

COMMENT ON FUNCTION fila.enqueue(text, text, text, text, integer, timestamptz, text, text, jsonb, integer) IS
    'Enqueues one message with fila enqueue''s rules (SQLSTATE 22023 "field: reason" for a bad one); an idempotency_key already used returns that row with inserted = false. Call it in your own transaction.';

-- SELECT * FROM fila.enqueue_batch('[{"cliente_id": "medico-1", "telefone": "5511999990001", "conteudo": "Olá"}]');
CREATE FUNCTION fila.enqueue_batch(mensagens jsonb) RETURNS TABLE (posicao integer, id uuid, inserted boolean)
LANGUAGE plpgsql SECURITY INVOKER SET search_path FROM CURRENT AS $$
DECLARE
    item jsonb;
    n integer := 0;
    unknown text;
    ids uuid[];
    keys text[];
BEGIN
    IF mensagens IS NULL OR jsonb_typeof(mensagens) <> 'array' THEN
        RAISE EXCEPTION 'mensagens: must be a JSON array of messages' USING ERRCODE = '22023';
    END IF;
    IF jsonb_array_length(mensagens) > 10000 THEN
        RAISE EXCEPTION 'mensagens: at most 10000 messages per call (got %)', jsonb_array_length(mensagens) USING ERRCODE = '22023';
    END IF;
    -- Every message is checked before any is written: one bad message refuses the batch.
    FOR item IN SELECT value FROM jsonb_array_elements(mensagens) LOOP
        n := n + 1;
        IF jsonb_typeof(item) <> 'object' THEN
            RAISE EXCEPTION 'message %: must be a JSON object', n USING ERRCODE = '22023';
        END IF;
        SELECT k INTO unknown FROM jsonb_object_keys(item) k
         WHERE k NOT IN ('cliente_id', 'telefone', 'conteudo', 'tipo', 'prioridade', 'agendar_para',
                         'idempotency_key', 'correlation_id', 'metadata', 'max_tentativas')
         LIMIT 1;
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'message %: unknown field %', n, unknown USING ERRCODE = '22023';
        END IF;
        IF item ? 'prioridade' AND (jsonb_typeof(item->'prioridade') <> 'number' OR abs((item->>'prioridade')::numeric) > 1000000
                                    OR (item->>'prioridade')::numeric % 1 <> 0)
           OR item ? 'max_tentativas' AND (jsonb_typeof(item->'max_tentativas') <> 'number' OR abs((item->>'max_tentativas')::numeric) > 1000000
                                           OR (item->>'max_tentativas')::numeric % 1 <> 0) THEN
            RAISE EXCEPTION 'message %: prioridade and max_tentativas must be whole numbers (-100 to 100, 1 to 100)', n USING ERRCODE = '22023';
        END IF;
        PERFORM fila_enqueue_check(
            item->>'cliente_id', item->>'telefone', item->>'conteudo', item->>'tipo',
            coalesce((item->>'prioridade')::numeric, 0)::integer, coalesce((item->>'max_tentativas')::numeric, 3)::integer,
            item->>'idempotency_key', item->>'correlation_id', coalesce(item->'metadata', '{}'::jsonb),
            format('message %s: ', n));
        -- A time with its zone, as fila enqueue reads it; never 'infinity' (it would never come due).
        IF item ? 'agendar_para' AND (
               jsonb_typeof(item->'agendar_para') <> 'string'
            OR (item->>'agendar_para') !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)$'
            OR fila_try_timestamptz(item->>'agendar_para') IS NULL) THEN
            RAISE EXCEPTION 'message %: agendar_para: must be a time with its zone, e.g. 2026-12-02T09:00:00-03:00', n
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    -- Written in one statement; what it skipped for a key taken meanwhile by another
    -- transaction is looked up by a second one, which sees that row once it has committed.
    WITH input AS (
        SELECT x.ordinality::integer AS posicao, x.value AS item, fila_uuid_v7() AS new_id
          FROM jsonb_array_elements(mensagens) WITH ORDINALITY x
    ),
    written AS (
        INSERT INTO fila_mensagens AS m (id, cliente_id, telefone, conteudo, tipo, prioridade, agendar_para,
                                         idempotency_key, correlation_id, metadata, max_tentativas)
        SELECT i.new_id, i.item->>'cliente_id', i.item->>'telefone', i.item->>'conteudo', i.item->>'tipo',
               coalesce((i.item->>'prioridade')::numeric, 0)::smallint, coalesce((i.item->>'agendar_para')::timestamptz, now()),
               i.item->>'idempotency_key', nullif(i.item->>'correlation_id', ''), coalesce(i.item->'metadata', '{}'::jsonb),
               coalesce((i.item->>'max_tentativas')::numeric, 3)::integer
          FROM input i
         ORDER BY i.posicao
        ON CONFLICT ON CONSTRAINT fila_mensagens_idempotency_key_key DO NOTHING
        RETURNING m.id)
    SELECT array_agg(w.id ORDER BY i.posicao), array_agg(i.item->>'idempotency_key' ORDER BY i.posicao)
      INTO ids, keys
      FROM input i
      LEFT JOIN written w ON w.id = i.new_id;
    RETURN QUERY
    SELECT x.posicao::integer, coalesce(x.id, (SELECT f.id FROM fila_mensagens f WHERE f.idempotency_key = x.key)), x.id IS NOT NULL
      FROM unnest(ids, keys) WITH ORDINALITY AS x(id, key, posicao)
     ORDER BY x.posicao;
END;
$$;

COMMENT ON FUNCTION fila.enqueue_batch(jsonb) IS
    'Enqueues a JSON array of messages (the fields of fila.enqueue), all or nothing: one bad message refuses the call with its position (SQLSTATE 22023). Returns each position''s id and whether it was inserted (false: its idempotency_key was already used).';
