-- sms_webhook_endpoints: the customers' webhook URLs and their delivery health. The API and
-- smsctl create, list and rotate them; the dispatcher disables them.

-- name: webhook_endpoints_disable
-- Disable an endpoint once (guarded on enabled: a second caller changes nothing and gets no row):
-- no new event is fanned out to it (the fan-out reads `enabled`), and every pending delivery of
-- it is dropped in the same statement, its outbox row deleted, whoever holds its lease (that
-- holder's guarded settle then changes nothing). Reads sms_webhook_deliveries_pending_idx.
-- An endpoint behind the fan-out (parked, migration 0021) also gets the events it missed, past
-- its position up to the fan-out cursor, as deliveries failed alike, so `smsctl webhooks replay`
-- can send them as it sends the dropped ones. The caller holds the cursor's lock
-- (webhook_endpoints_lock_fanout, same transaction, before this statement), so the position and the
-- cursor are read as no fan-out step is moving them.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
was AS MATERIALIZED (
    SELECT w.id, w.api_key_id, w.events, w.behind_xact, w.behind_event_id
    FROM sms_webhook_endpoints w
    WHERE w.id = %(endpoint_id)s AND w.enabled
),
off AS (
    UPDATE sms_webhook_endpoints w
    SET enabled = false, disabled_reason = %(reason)s, disabled_at = clock.now,
        behind_xact = NULL, behind_event_id = NULL
    FROM clock
    WHERE w.id = %(endpoint_id)s AND w.enabled
    RETURNING w.id, w.api_key_id, w.url, w.failing_since
),
missed AS (
    -- The events of webhook_deliveries_catch_up, all at once, failed.
    SELECT e.*
    FROM was ep
    JOIN off ON off.id = ep.id
    CROSS JOIN sms_webhook_fanout c
    CROSS JOIN LATERAL sms_webhook_events_between(ep.behind_xact, ep.behind_event_id,
                                                  c.xact, c.event_id, NULL) e
    WHERE c.id AND ep.behind_xact IS NOT NULL AND e.webhook
),
missed_made AS (
    INSERT INTO sms_webhook_deliveries
        (endpoint_id, event_type, message_id, payload, occurred_at, state, last_error)
    SELECT ep.id, ev.type, (m.r).id,
           sms_webhook_message_body(ev.type, ev.occurred_at, ev.status, ev.previous_status, m.r),
           ev.occurred_at, 'failed', 'endpoint disabled: ' || %(reason)s::text
    FROM missed ev
    CROSS JOIN was ep
    CROSS JOIN LATERAL (
        SELECT m AS r FROM sms_messages m WHERE m.id = ev.message_id OFFSET 0
    ) m
    WHERE (m.r).api_key_id = ep.api_key_id AND (ep.events = '{}' OR ev.type = ANY (ep.events))
    ORDER BY ev.id
    RETURNING id
),
dropped AS (
    UPDATE sms_webhook_deliveries d
    SET state = 'failed', last_error = 'endpoint disabled: ' || %(reason)s::text
    FROM off
    WHERE d.endpoint_id = off.id AND d.state = 'pending'
    RETURNING d.id
),
unqueued AS (
    DELETE FROM sms_outbox o
    USING dropped
    WHERE o.webhook_delivery_id = dropped.id
)
SELECT off.id, off.api_key_id, off.url, off.failing_since,
       (SELECT count(*) FROM dropped) + (SELECT count(*) FROM missed_made) AS dropped
FROM off;

-- name: webhook_endpoints_lock_fanout
-- The fan-out cursor's row lock, waited for (not SKIP LOCKED), in a transaction that disables
-- endpoints: their positions behind the fan-out (migration 0021) and the cursor then hold still
-- until it commits (webhook_endpoints_disable).
SELECT f.id FROM sms_webhook_fanout f WHERE f.id FOR UPDATE;

-- name: webhook_endpoints_health
-- Every endpoint's delivery health from the sms_webhook_health view (never a secret), with how
-- long it has been failing, and the fan-out's lag, for the webhook gauges on /metrics. The view
-- counts each endpoint's backlog through sms_webhook_deliveries_pending_idx.
SELECT endpoint_id, api_key_id, enabled, pending, oldest_pending_seconds, failing_since,
       extract(epoch FROM now() - failing_since)::float8 AS failing_seconds,
       fanout_lag_seconds
FROM sms_webhook_health
ORDER BY endpoint_id;

-- name: webhook_endpoints_lock_key
-- The key an endpoint is registered for, locked (FOR UPDATE) until the registration commits:
-- two registrations for one key then count its endpoints one after the other, each in a
-- statement of its own that sees what the other committed, so none passes the per-key cap.
-- Registrations for other keys are not held up.
SELECT k.id, k.revoked_at
FROM sms_api_keys k
WHERE k.id = %(api_key_id)s
FOR UPDATE;

-- name: webhook_endpoints_create
-- Register an endpoint, unless its key (locked by webhook_endpoints_lock_key in the same
-- transaction) has %(max_per_key)s already, disabled ones included: then no row. The count reads
-- the endpoints of one key by sms_webhook_endpoints_key_idx's column.
INSERT INTO sms_webhook_endpoints (api_key_id, url, secret, events)
SELECT %(api_key_id)s, %(url)s, %(secret)s, %(events)s::text[]
WHERE (SELECT count(*) FROM sms_webhook_endpoints w WHERE w.api_key_id = %(api_key_id)s)
      < %(max_per_key)s
RETURNING id;

-- name: webhook_endpoints_list
-- Endpoints with their delivery health from sms_webhook_health, never a secret: one key's
-- (%(owner)s), or every key's for an operator (owner NULL); one of them with %(id)s. The view
-- counts each endpoint's backlog on sms_webhook_deliveries_pending_idx, and the filters reach
-- it through the join, so a key's list reads only its own endpoints' backlogs. An expired
-- rotation overlap shows as none.
SELECT w.id, w.api_key_id, w.url, w.events, w.enabled, w.disabled_reason, w.disabled_at,
       w.created_at,
       CASE WHEN w.previous_secret_expires_at > now()
            THEN w.previous_secret_expires_at END AS previous_secret_expires_at,
       h.last_success_at, h.last_failure_at, h.last_error, h.failing_since, h.pending,
       h.oldest_pending_seconds
FROM sms_webhook_endpoints w
JOIN sms_webhook_health h ON h.endpoint_id = w.id
WHERE (%(owner)s::bigint IS NULL OR w.api_key_id = %(owner)s)
  AND (%(id)s::bigint IS NULL OR w.id = %(id)s)
ORDER BY w.id;

-- name: webhook_endpoints_delete
-- Remove an endpoint of %(owner)s (any key's when NULL: an operator). Its deliveries go with it
-- (ON DELETE CASCADE), and their outbox rows with them; a delivery in flight at that moment
-- finds its row gone when it settles, and that settle changes nothing.
DELETE FROM sms_webhook_endpoints w
WHERE w.id = %(id)s AND (%(owner)s::bigint IS NULL OR w.api_key_id = %(owner)s)
RETURNING w.id, w.api_key_id;

-- name: webhook_endpoints_rotate_secret
-- A new signing secret; the one it replaces keeps signing beside it for %(overlap_seconds)s
-- (every delivery carries both signatures meanwhile), so receivers switch without losing one.
-- A second rotation within the overlap retires the oldest secret at once.
UPDATE sms_webhook_endpoints w
SET previous_secret = w.secret,
    previous_secret_expires_at = now() + make_interval(secs => %(overlap_seconds)s::float8),
    secret = %(secret)s
WHERE w.id = %(id)s AND (%(owner)s::bigint IS NULL OR w.api_key_id = %(owner)s)
RETURNING w.id;

-- name: webhook_endpoints_enable
-- Enable an endpoint again (after a 410 or WEBHOOK_RETRY_HOURS of failures), healthy as new:
-- failing_since restarts, so the first failure after this is not taken for days of them, and it is
-- no longer parked (0013), so new events go at once. Only events from now on are fanned out to
-- it; `smsctl webhooks replay` sends the missed ones.
-- The row is locked first, so the answer says whether it was enabled before this statement.
WITH before AS (
    SELECT w.id, w.enabled
    FROM sms_webhook_endpoints w
    WHERE w.id = %(id)s AND (%(owner)s::bigint IS NULL OR w.api_key_id = %(owner)s)
    FOR UPDATE
),
enabled AS (
    UPDATE sms_webhook_endpoints w
    SET enabled = true, disabled_reason = NULL, disabled_at = NULL, failing_since = NULL,
        parked_until = NULL
    FROM before
    WHERE w.id = before.id AND NOT before.enabled
    RETURNING w.id
)
SELECT before.id, before.enabled AS was_enabled FROM before;

-- name: webhook_endpoints_of_key
-- The enabled endpoints of one API key (disabled with it when the key is revoked).
SELECT id
FROM sms_webhook_endpoints
WHERE api_key_id = %(api_key_id)s AND enabled
ORDER BY id;
