-- Status callbacks and the status sweeper (shared/status.py, dispatcher/sweeper.py).

-- name: status_lock_by_id
-- Lock the message first, so callbacks for one message apply one after another and the "from"
-- of the transition we log is the status we really moved from. Primary key lookup; no network
-- call ever happens while this lock is held.
SELECT id, conversation_id, provider, provider_sid, delivery_status
FROM sms_messages
WHERE id = %(message_id)s
FOR UPDATE;

-- name: status_lock_by_sid
-- Same, for callbacks that carry no id of ours: UNIQUE (provider, provider_sid) serves it.
SELECT id, conversation_id, provider, provider_sid, delivery_status
FROM sms_messages
WHERE provider = %(provider)s AND provider_sid = %(sid)s
FOR UPDATE;

-- name: status_record_callback
-- Every callback is kept raw. The partial unique index sms_message_events_callback_once
-- (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, '')) WHERE event_type =
-- 'callback' makes an exact duplicate a no-op; RETURNING tells the caller whether this one was new.
-- The sid is part of the key: a stray copy's `delivered` never hides the recorded sid's own.
-- Callbacks for unknown messages (message_id NULL) are outside that index and always kept.
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
VALUES
    (%(message_id)s, 'callback', %(raw_status)s, %(provider)s, %(sid)s, %(error_code)s, %(detail)s)
ON CONFLICT (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, ''))
    WHERE event_type = 'callback' AND message_id IS NOT NULL
    DO NOTHING
RETURNING id;

-- name: status_record_duplicate_send
-- A provider message that carries our message id but is not the one we recorded: a double send,
-- detected. Once per (message, stray sid) (unique index sms_message_events_duplicate_once);
-- RETURNING says whether this is the first sight of that stray copy.
INSERT INTO sms_message_events
    (message_id, event_type, provider, provider_sid, detail)
VALUES
    (%(message_id)s, 'duplicate_send_detected', %(provider)s, %(sid)s,
     jsonb_build_object('recorded_sid', %(recorded_sid)s::text, 'raw_status', %(raw_status)s::text))
ON CONFLICT (provider, provider_sid, message_id)
    WHERE event_type = 'duplicate_send_detected'
    DO NOTHING
RETURNING id;

-- name: status_record_sweep
-- What the sweeper read from the provider, kept as a 'sweep' event (not deduplicated: each check
-- is a fact of its own).
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
VALUES
    (%(message_id)s, 'sweep', %(raw_status)s, %(provider)s, %(sid)s, %(error_code)s, %(detail)s)
RETURNING id;

-- name: status_record_sid
-- A callback that beats the dispatcher's own recording of the sid brings the sid first. Guarded
-- by provider_sid IS NULL so it never overwrites one; the NOT EXISTS keeps a sid that already
-- belongs to another message from failing the whole transaction on UNIQUE (provider, provider_sid).
-- The dispatcher's later write of the same sid must be idempotent (coalesce / IS NULL OR = sid).
UPDATE sms_messages
SET provider_sid = %(sid)s, updated_at = now()
WHERE id = %(message_id)s
  AND provider_sid IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM sms_messages other
      WHERE other.provider = %(provider)s AND other.provider_sid = %(sid)s
  )
RETURNING provider_sid;

-- name: status_transition
-- The one guarded status change: delivery_status = ANY(sources) (shared.lifecycle.sources_for)
-- makes a backwards, sideways or already-applied move touch zero rows. final_at follows the CHECK
-- (set exactly for terminal statuses; delivered -> read keeps the first one). submitted_at is set
-- when a callback reports acceptance before the dispatcher recorded it, so the sweeper can still
-- find the message. The error columns are written only for failed/undelivered.
-- CTEs: `moved` is the UPDATE; `touched` moves the conversation's last_message_at; `logged`
-- appends the transition event. All happen or none.
WITH moved AS (
    UPDATE sms_messages
    SET delivery_status = %(status)s,
        updated_at = now(),
        submitted_at = CASE WHEN %(status)s IN ('queued', 'sending', 'sent', 'delivered', 'read')
                            THEN coalesce(submitted_at, now()) ELSE submitted_at END,
        final_at = CASE WHEN %(terminal)s THEN coalesce(final_at, now()) ELSE NULL END,
        error_code = CASE WHEN %(failed)s THEN %(error_code)s ELSE error_code END,
        error_category = CASE WHEN %(failed)s THEN 'delivery' ELSE error_category END,
        error_message = CASE WHEN %(failed)s THEN %(error_message)s ELSE error_message END
    WHERE id = %(message_id)s
      AND delivery_status = ANY(%(sources)s)
    RETURNING id, conversation_id, provider, provider_sid
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, now())
    FROM moved
    WHERE c.id = moved.conversation_id
    RETURNING c.id
),
logged AS (
    INSERT INTO sms_message_events
        (message_id, event_type, from_status, to_status, provider, provider_sid, error_code,
         error_category, detail)
    SELECT id, 'transition', %(previous)s, %(status)s, provider, provider_sid,
           CASE WHEN %(failed)s THEN %(error_code)s END,
           CASE WHEN %(failed)s THEN 'delivery' END,
           %(detail)s
    FROM moved
    RETURNING id
)
SELECT moved.id, moved.conversation_id FROM moved;

-- name: status_sweep_claim
-- Accepted messages whose callbacks never came: still queued/sending/sent long after submission,
-- and either never checked, not checked within the same interval, or due again after a lookup
-- that failed for a passing reason (status_recheck_at). `budget` says how many each provider's
-- read budget allows this time (dispatcher/sweeper.py); the LATERAL takes that many per provider,
-- oldest first, so a backlog at one provider never spends another's reads. Each walks the partial
-- index sms_messages_open_idx in submitted_at order and stops at its limit. FOR UPDATE SKIP
-- LOCKED plus the status_checked_at bump, committed at once, make two sweepers take different
-- messages: a row another sweeper just bumped fails the re-checked WHERE. Messages older than
-- the max age are left alone (some carriers never report a final status). `clock` is the
-- database clock unless the caller injects one (tests).
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
budget AS (
    SELECT b.provider, b.reads
    FROM unnest(%(providers)s::text[], %(reads)s::int[]) AS b(provider, reads)
    WHERE b.reads > 0
),
due AS (
    SELECT d.id
    FROM budget, clock, LATERAL (
        SELECT m.id
        FROM sms_messages m
        WHERE m.provider = budget.provider
          AND m.delivery_status IN ('queued', 'sending', 'sent')
          AND m.submitted_at < clock.now - make_interval(secs => %(after)s)
          AND m.submitted_at > clock.now - make_interval(secs => %(max_age)s)
          AND (m.status_checked_at IS NULL
               OR m.status_checked_at < clock.now - make_interval(secs => %(after)s)
               OR m.status_recheck_at <= clock.now)
        ORDER BY m.submitted_at
        LIMIT budget.reads
        FOR UPDATE OF m SKIP LOCKED
    ) d
)
UPDATE sms_messages m
SET status_checked_at = clock.now, status_recheck_at = NULL
FROM due, clock
WHERE m.id = due.id
RETURNING m.id, m.provider, m.provider_sid, m.delivery_status, m.status_checked_at,
          m.status_check_failures;

-- name: status_sweep_settle
-- After the lookups of one claim, in one statement: a lookup that failed for a passing reason is
-- due again `recheck_in` seconds after its claim (status_recheck_at) with its failure count;
-- one the provider answered puts the count back to 0. Rows whose bookkeeping does not change are
-- not sent. Guarded by status_checked_at = the claim's time, so a row claimed since by another
-- sweeper keeps that sweeper's bookkeeping. updated_at stays: nothing about the message changed.
UPDATE sms_messages m
SET status_recheck_at = m.status_checked_at + make_interval(secs => s.recheck_in),
    status_check_failures = s.failures
FROM unnest(%(ids)s::uuid[], %(recheck_in)s::float8[], %(failures)s::int[])
    AS s(id, recheck_in, failures)
WHERE m.id = s.id
  AND m.status_checked_at = %(checked_at)s
RETURNING m.id;
