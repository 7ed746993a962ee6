-- sms_alerts: final failures and operator alerts, and their delivery.

-- name: alerts_insert
-- One alert row; a second final-failure alert for the same message does nothing (unique partial
-- index sms_alerts_one_per_message) and returns no row, so callers never alert twice. With a
-- webhook configured (%(deliver)s) its delivery becomes outbox work in the same transaction;
-- otherwise the alert is marked not_configured. The 'alert' event joins the message's history.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
new_alert AS (
    INSERT INTO sms_alerts
        (kind, message_id, provider, error_code, error_category, error_message, payload,
         delivery_state, created_at)
    SELECT %(kind)s, %(message_id)s::uuid, %(provider)s, %(error_code)s, %(error_category)s,
           %(error_message)s, %(payload)s::jsonb,
           CASE WHEN %(deliver)s::boolean THEN 'pending' ELSE 'not_configured' END, clock.now
    FROM clock
    ON CONFLICT DO NOTHING
    RETURNING id, created_at
),
work AS (
    INSERT INTO sms_outbox (kind, alert_id, next_attempt_at, created_at, updated_at)
    SELECT 'deliver_alert', a.id, a.created_at, a.created_at, a.created_at
    FROM new_alert a
    WHERE %(deliver)s::boolean
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, provider, error_code, error_category, detail, occurred_at)
    SELECT %(message_id)s::uuid, 'alert', %(provider)s, %(error_code)s, %(error_category)s,
           jsonb_build_object('alert_id', a.id, 'kind', %(kind)s::text), a.created_at
    FROM new_alert a
    WHERE %(message_id)s::uuid IS NOT NULL
)
SELECT id, created_at FROM new_alert;

-- name: alerts_for_delivery
-- The JSON an alert webhook receives: the stored payload plus the alert's id and time.
SELECT id, kind, delivery_state,
       payload || jsonb_build_object('alert_id', id, 'kind', kind,
                                     'created_at', to_char(created_at AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
           AS body
FROM sms_alerts
WHERE id = %(alert_id)s;

-- name: alerts_mark_delivery
-- Delivery outcome of an alert: delivered (with its time), failed (gave up) or not_configured.
-- Guarded: only a pending alert changes.
UPDATE sms_alerts
SET delivery_state = %(state)s::text,
    delivered_at = CASE WHEN %(state)s::text = 'delivered'
                        THEN coalesce(%(now)s::timestamptz, now()) END
WHERE id = %(alert_id)s AND delivery_state = 'pending'
RETURNING id;

-- name: alerts_recent
-- The newest alerts first (sms_alerts is small: one row per final failure or config episode).
SELECT id, kind, message_id, provider, error_code, error_category, error_message, delivery_state,
       created_at, delivered_at
FROM sms_alerts
ORDER BY id DESC
LIMIT %(limit)s;

-- name: alerts_open
-- Alerts still open, newest first, for the ops console: a message's failure alert until a requeue
-- supersedes it, a provider's config alert while that provider's pause runs. sms_alerts is small
-- (one row per failure episode); `open_count` is the total however many rows the limit keeps.
SELECT a.id, a.kind, a.message_id, a.provider, a.error_code, a.error_category, a.error_message,
       a.delivery_state, a.created_at, count(*) OVER () AS open_count
FROM sms_alerts a
WHERE a.superseded_at IS NULL
  AND (a.kind <> 'provider_config'
       OR EXISTS (SELECT 1 FROM sms_provider_pauses p
                  WHERE p.provider = a.provider AND p.paused_until > now()))
ORDER BY a.id DESC
LIMIT %(limit)s;
