-- Operator queries of smsctl and the HTTP API (shared/operations.py, tooling/cli_reports.py,
-- tooling/retention.py): listing, cancel, requeue, the outbox report, senders, alerts, retention.

-- name: ops_messages_list
-- Newest first over (created_at, id), keyset-paged: the cursor is the last row's (created_at, id),
-- so a page costs the same however deep it is (sms_messages_created_idx; status, conversation and
-- recipient filters have their own indexes). A NULL parameter means "no filter". Run unprepared:
-- a generic plan for the NULL-or-equal filters would ignore the index the given filter needs.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at
FROM sms_messages m
WHERE (%(status)s::text IS NULL OR m.delivery_status = %(status)s::text)
  AND (%(conversation_id)s::uuid IS NULL OR m.conversation_id = %(conversation_id)s::uuid)
  AND (%(to_number)s::text IS NULL OR m.to_number = %(to_number)s::text)
  AND (%(from_number)s::text IS NULL OR m.from_number = %(from_number)s::text)
  AND (%(number)s::text IS NULL OR m.to_number = %(number)s::text
       OR m.from_number = %(number)s::text)
  AND (%(since)s::timestamptz IS NULL OR m.created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR m.created_at < %(until)s::timestamptz)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (m.created_at, m.id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY m.created_at DESC, m.id DESC
LIMIT %(limit)s;

-- name: ops_work_lock
-- Cancel locks the message's outbox row first, then the message: the dispatcher takes the same
-- order (claim the row, later update the message), so the two never deadlock. Holding this lock
-- makes a concurrent claim skip the row (SKIP LOCKED); a row already leased is reported.
SELECT id, state, attempt_started_at
FROM sms_outbox
WHERE message_id = %(id)s
FOR UPDATE;

-- name: ops_message_lock
-- The message's current status and sid, locked until the caller's transaction ends.
SELECT id, delivery_status, provider, provider_sid
FROM sms_messages
WHERE id = %(id)s
FOR UPDATE;

-- name: ops_message_cancel
-- pending -> canceled, guarded on pending (zero rows: someone moved it first). Its outbox row goes
-- in the same statement, so no dispatcher can claim it afterwards; the conversation is touched and
-- the 'canceled' event records pending -> canceled.
WITH moved AS (
    UPDATE sms_messages
    SET delivery_status = 'canceled', final_at = now(), updated_at = now()
    WHERE id = %(id)s AND delivery_status = 'pending'
    RETURNING id, conversation_id, provider
),
dropped AS (
    DELETE FROM sms_outbox o
    USING moved
    WHERE o.message_id = moved.id AND o.kind = 'send_sms'
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, now())
    FROM moved
    WHERE c.id = moved.conversation_id
),
logged AS (
    INSERT INTO sms_message_events (message_id, event_type, from_status, to_status, provider, detail)
    SELECT moved.id, 'canceled', 'pending', 'canceled', moved.provider,
           jsonb_build_object('by', %(actor)s::text)
    FROM moved
)
SELECT id FROM moved;

-- name: ops_message_requeue
-- failed -> pending with a fresh attempt budget, guarded on failed and on no provider sid (a
-- message the provider accepted once is never resent: it could arrive twice). The CHECK wants
-- final_at NULL on pending; the old error moves into the 'requeued' event. A new send_sms row is
-- due at once; ON CONFLICT keeps a second concurrent requeue from failing (the guard already
-- stopped it, as the row lock makes the second one see 'pending').
WITH moved AS (
    UPDATE sms_messages m
    SET delivery_status = 'pending', final_at = NULL, error_code = NULL, error_category = NULL,
        error_message = NULL, attempts = 0, status_checked_at = NULL, updated_at = now()
    FROM (SELECT id, error_code, error_category, error_message, attempts
          FROM sms_messages WHERE id = %(id)s) old
    WHERE m.id = old.id AND m.delivery_status = 'failed' AND m.provider_sid IS NULL
    RETURNING m.id, m.conversation_id, m.provider, old.error_code, old.error_category,
              old.error_message, old.attempts
),
work AS (
    INSERT INTO sms_outbox (kind, message_id, provider, attempts, next_attempt_at)
    SELECT 'send_sms', moved.id, moved.provider, 0, now()
    FROM moved
    ON CONFLICT (message_id) DO NOTHING
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, now())
    FROM moved
    WHERE c.id = moved.conversation_id
),
superseded AS (
    -- The failure's alert is history now; a new final failure may alert again (partial unique
    -- index sms_alerts_one_per_message covers only alerts not superseded).
    UPDATE sms_alerts a
    SET superseded_at = now()
    FROM moved
    WHERE a.message_id = moved.id AND a.kind = 'message_failed' AND a.superseded_at IS NULL
),
logged AS (
    INSERT INTO sms_message_events
        (message_id, event_type, from_status, to_status, provider, error_code, error_category,
         detail)
    SELECT moved.id, 'requeued', 'failed', 'pending', moved.provider, moved.error_code,
           moved.error_category,
           jsonb_build_object('by', %(actor)s::text, 'previous_attempts', moved.attempts,
                              'previous_error', moved.error_message)
    FROM moved
)
SELECT id FROM moved;

-- name: ops_failed_since
-- Candidates for `smsctl retry --failed-since`: failed, never accepted, ended at or after the
-- given time (sms_messages_final_idx). Each is then requeued in its own guarded transaction.
SELECT id
FROM sms_messages
WHERE final_at >= %(since)s
  AND delivery_status = 'failed'
  AND provider_sid IS NULL
ORDER BY final_at, id;

-- name: ops_outbox_depth
-- Depth and due age by kind and state, from the view (the outbox is small by design: finished
-- work leaves it, so counting it is cheap enough for every scrape).
SELECT kind, state, depth, due, oldest_due_seconds, expired_leases
FROM sms_queue_health
ORDER BY kind, state;

-- name: ops_outbox_leases
-- Work held per dispatcher: how many rows each lease owner has, and how many of those expired.
SELECT lease_owner, count(*) AS leased,
       count(*) FILTER (WHERE lease_expires_at <= now()) AS expired,
       min(lease_expires_at) AS first_expiry
FROM sms_outbox
WHERE state = 'leased'
GROUP BY lease_owner
ORDER BY lease_owner;

-- name: ops_provider_pauses
-- Paused providers (config errors); a row whose paused_until has passed no longer holds work back.
SELECT provider, paused_until, paused_until > now() AS active, failures, error_code, reason,
       updated_at
FROM sms_provider_pauses
ORDER BY provider;

-- name: ops_senders_list
-- Every sender, the default first (small table).
SELECT phone_number, provider, enabled, is_default, created_at, updated_at
FROM sms_senders
ORDER BY is_default DESC, phone_number;

-- name: ops_senders_add
-- A new sender, enabled; an existing number is left untouched and no row comes back.
INSERT INTO sms_senders (phone_number, provider)
VALUES (%(phone_number)s, %(provider)s)
ON CONFLICT (phone_number) DO NOTHING
RETURNING phone_number;

-- name: ops_senders_disable
-- Disabling the default sender also clears its default flag (CHECK NOT is_default OR enabled).
-- Guarded on enabled: a second disable returns no row.
UPDATE sms_senders
SET enabled = false, is_default = false, updated_at = now()
WHERE phone_number = %(phone_number)s AND enabled
RETURNING phone_number;

-- name: ops_alerts_recent
-- The newest alerts first (sms_alerts is small: one row per final failure or config episode).
SELECT id, kind, message_id, provider, error_code, error_category, error_message, delivery_state,
       created_at, delivered_at
FROM sms_alerts
ORDER BY id DESC
LIMIT %(limit)s;

-- name: ops_prune_messages
-- One retention batch: final messages that ended longer ago than older_than (database clock) and
-- have no outbox work of their own or of their alert. Their events and alerts go by ON DELETE
-- CASCADE. SKIP LOCKED leaves rows someone is touching for the next run; small batches keep each
-- transaction short (vacuum and replication keep up).
WITH victims AS (
    SELECT m.id
    FROM sms_messages m
    WHERE m.final_at < now() - %(older_than)s::interval
      AND NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.message_id = m.id)
      AND NOT EXISTS (SELECT 1 FROM sms_alerts a JOIN sms_outbox o ON o.alert_id = a.id
                      WHERE a.message_id = m.id)
    ORDER BY m.final_at
    LIMIT %(batch)s
    FOR UPDATE OF m SKIP LOCKED
)
DELETE FROM sms_messages m
USING victims
WHERE m.id = victims.id
RETURNING m.id;

-- name: ops_prune_orphan_events
-- Callbacks for messages we never knew (message_id NULL) older than older_than, one batch.
DELETE FROM sms_message_events
WHERE id IN (SELECT id FROM sms_message_events
             WHERE message_id IS NULL AND occurred_at < now() - %(older_than)s::interval
             ORDER BY occurred_at
             LIMIT %(batch)s)
RETURNING id;

-- name: ops_callback_lag
-- Seconds from the provider accepting the message to now (a status callback arriving), for the
-- sms_callback_lag_seconds histogram. Primary key look-up; NULL before acceptance is recorded.
SELECT extract(epoch FROM now() - submitted_at)::float8 AS lag
FROM sms_messages
WHERE id = %(id)s;
