-- 0022_false_alerts: ops.mark_false_alert marks what ops.alertas_falsos_positivos counts.
--
-- The view counts firing notifications only. Marking a resolution (kind 'resolved') changed
-- nothing there, silently: it is refused now, with the firing notification it resolved as the
-- hint. Marking an event again is a no-op with a NOTICE that says when and by whom it was
-- marked, and no second audit row, so a list of ids can be marked twice without error.

CREATE OR REPLACE FUNCTION ops.mark_false_alert(id bigint, motivo text) RETURNS alert_events
LANGUAGE plpgsql AS $$
DECLARE
    why text := fila_ops_motivo(motivo, 'mark it a false alert');
    event alert_events;
    fired bigint;
    marked ops_audit;
BEGIN
    SELECT * INTO event FROM alert_events e WHERE e.id = mark_false_alert.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert notification with id %', coalesce(mark_false_alert.id::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT id, rule, key, kind, title, created_at FROM alert_events ORDER BY id DESC LIMIT 20;';
    END IF;
    IF event.kind = 'resolved' THEN
        SELECT max(f.id) INTO fired FROM alert_events f
         WHERE f.rule = event.rule AND f.key = event.key AND f.kind = 'firing' AND f.id < event.id;
        RAISE EXCEPTION 'alert notification % says % % was resolved; mark the notification that fired%', event.id, event.rule, event.key,
                        coalesce(' (id ' || fired || ')', '')
            USING ERRCODE = '22023',
                  HINT = format('SELECT ops.mark_false_alert(%s, %L);', coalesce(fired::text, 'id'), motivo);
    END IF;
    IF event.false_positive THEN
        SELECT * INTO marked FROM ops_audit a
         WHERE a.acao = 'mark_false_alert' AND a.argumentos->>'id' = event.id::text
         ORDER BY a.feito_em DESC LIMIT 1;
        RAISE NOTICE 'alert notification % was already marked a false alert%', event.id,
                     CASE WHEN marked.id IS NOT NULL THEN format(' (by %s at %s: %s)', marked.feito_por, marked.feito_em, marked.motivo) ELSE '' END;
        RETURN event;
    END IF;
    UPDATE alert_events e SET false_positive = true WHERE e.id = event.id RETURNING * INTO event;
    PERFORM fila_ops_record('mark_false_alert', jsonb_build_object('id', event.id, 'rule', event.rule), why, 1);
    RETURN event;
END;
$$;

COMMENT ON FUNCTION ops.mark_false_alert(bigint, text) IS
    'Marks a firing alert notification a false alert (ops.alertas_falsos_positivos counts them); a resolution is refused, a second mark changes nothing. Audited';

SELECT fila_grant_roles();
