-- Alerting: the state of every alert condition and the notifications it produced, in
-- Postgres, so that deduplication and cooldown hold across replicas and restarts.
--
-- alert_state   one row per (rule, key) that has ever fired: whether it fires now, since
--               when, and when a person was last told. Evaluators lock these rows while they
--               decide, so two evaluators reporting the same condition at once produce one
--               notification.
-- alert_events  every notification decided (firing or resolved), an outbox: the delivery
--               service sends the pending ones to Slack, retries them while Slack is down, and
--               records how each ended. Ops mark a false alert with one UPDATE.
-- ops.alertas   open alerts and the false-alert rate over 30 days.
--
-- Thresholds live in app_settings under 'alert.<rule>.<name>' (defaults in code, listed in
-- ops/RUNBOOK.md); 'alert.<rule>.cooldown_seconds' is the re-notification interval of a
-- condition that keeps firing.

CREATE TABLE alert_state (
    -- The seed's rule names (fila_acumulada, worker_sem_heartbeat, …), kept as ops know them.
    rule             text NOT NULL CHECK (rule ~ '^[a-z0-9_]{1,100}$'),
    -- Which instance of the rule ('' when the rule has one instance, else e.g. a job name).
    key              text NOT NULL DEFAULT '' CHECK (length(key) <= 200),
    firing           boolean NOT NULL DEFAULT false,
    -- When the current (or last) firing episode began.
    first_seen_at    timestamptz,
    -- The last evaluation that found the condition firing.
    last_seen_at     timestamptz,
    -- When a person was last told it fires: the cooldown counts from here.
    last_notified_at timestamptz,
    -- When the last episode cleared (NULL while firing).
    resolved_at      timestamptz,
    -- How many firing notifications the current episode produced.
    notifications    integer NOT NULL DEFAULT 0 CHECK (notifications >= 0),
    -- What the last evaluation said, as a person reads it.
    title            text NOT NULL DEFAULT '',
    text             text NOT NULL DEFAULT '',
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, key),
    CHECK (NOT firing OR first_seen_at IS NOT NULL)
);

COMMENT ON TABLE alert_state IS
    'One row per alert condition (rule, key) that has fired: whether it fires now and when it was last notified. Locked by evaluators while they decide, so replicas never notify twice.';

CREATE TABLE alert_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule            text NOT NULL,
    key             text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('firing', 'resolved')),
    title           text NOT NULL,
    text            text NOT NULL,
    -- The alert's fields and the evaluation's numbers, as the notification showed them.
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- pending: waiting for (another) delivery attempt; sent: Slack answered 200 ok;
    -- failed: Slack refused it for good (a configuration error: bad URL, revoked webhook);
    -- disabled: SLACK_WEBHOOK_URL was not set, so it was only logged.
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'disabled')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- A pending event is sent when this passes; a claim moves it forward (a lease), so a
    -- replica that dies mid-send leaves the event to be sent again later, never lost.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    -- Why the last attempt failed (status and Slack's error string; never the webhook URL).
    last_error      text,
    -- Set by ops when the alert was not worth a person's attention: the seed's "alertas
    -- falsos positivos < 5%" is computed from it (ops.alertas).
    false_positive  boolean NOT NULL DEFAULT false,
    FOREIGN KEY (rule, key) REFERENCES alert_state (rule, key),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);

COMMENT ON TABLE alert_events IS
    'Every alert notification (firing or resolved) and its Slack delivery. Mark a false alert: UPDATE alert_events SET false_positive = true WHERE id = …;';
COMMENT ON COLUMN alert_events.false_positive IS
    'Set by ops when the alert needed no action; ops.alertas reports the 30-day rate';

-- The delivery service's claim reads only pending rows in due order.
CREATE INDEX alert_events_pending_idx ON alert_events (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX alert_events_rule_idx ON alert_events (rule, key, created_at);
CREATE INDEX alert_events_created_idx ON alert_events (created_at);

-- Open alerts, one row each, with the false-alert rate of their rule over 30 days and the
-- delivery of their last notification.
CREATE VIEW ops.alertas AS
WITH rate AS (
    SELECT e.rule,
           count(*) FILTER (WHERE e.kind = 'firing') AS alertas_30d,
           count(*) FILTER (WHERE e.kind = 'firing' AND e.false_positive) AS falsos_30d
      FROM alert_events e
     WHERE e.created_at > now() - interval '30 days'
     GROUP BY e.rule
)
SELECT s.rule, s.key, s.title, s.first_seen_at, now() - s.first_seen_at AS firing_for,
       s.last_notified_at, s.notifications, s.payload,
       last.status AS last_delivery, last.last_error AS last_delivery_error,
       coalesce(rate.alertas_30d, 0) AS alertas_30d, coalesce(rate.falsos_30d, 0) AS falsos_30d,
       round(100.0 * rate.falsos_30d / nullif(rate.alertas_30d, 0), 1) AS taxa_falsos_30d_pct
  FROM alert_state s
  LEFT JOIN rate ON rate.rule = s.rule
  LEFT JOIN LATERAL (
        SELECT e.status, e.last_error FROM alert_events e
         WHERE e.rule = s.rule AND e.key = s.key
         ORDER BY e.created_at DESC, e.id DESC
         LIMIT 1) last ON true
 WHERE s.firing
 ORDER BY s.first_seen_at;

COMMENT ON VIEW ops.alertas IS
    'Open alerts with their last delivery, and each rule''s false-alert rate over 30 days: SELECT * FROM ops.alertas;';

-- The seed's success metric ("alertas falsos positivos < 5%") over every rule, 30 days.
CREATE VIEW ops.alertas_falsos_positivos AS
SELECT e.rule,
       count(*) AS alertas_30d,
       count(*) FILTER (WHERE e.false_positive) AS falsos_30d,
       round(100.0 * count(*) FILTER (WHERE e.false_positive) / count(*), 1) AS taxa_falsos_30d_pct
  FROM alert_events e
 WHERE e.kind = 'firing' AND e.created_at > now() - interval '30 days'
 GROUP BY ROLLUP (e.rule)
 ORDER BY e.rule NULLS LAST;

COMMENT ON VIEW ops.alertas_falsos_positivos IS
    'False-alert rate per rule over 30 days, and overall (rule NULL): SELECT * FROM ops.alertas_falsos_positivos;';
