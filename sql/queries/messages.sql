-- sms_messages: enqueue, reads, locks, status changes, operator actions, sweeper bookkeeping,
-- retention. One file per table (River's habit): a query lives with the table it is about.

-- name: messages_fail
-- The final failure of a message as one guarded UPDATE: only from a status that may still become
-- %(status)s (`failed`, or `expired` when its validity ended unsent; %(sources)s, from
-- shared.lifecycle), so a message that was delivered, canceled or already failed is left alone. The prior status is read under the row lock to log `prior -> failed`; the
-- transition event and the conversation's last_message_at are written in the same statement.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
prior AS (
    SELECT m.id, m.delivery_status
    FROM sms_messages m
    WHERE m.id = %(message_id)s AND m.delivery_status = ANY(%(sources)s::text[])
    FOR UPDATE
),
moved AS (
    UPDATE sms_messages m
    SET delivery_status = %(status)s, error_code = %(error_code)s,
        error_category = %(error_category)s, error_message = %(error_message)s,
        final_at = clock.now, updated_at = clock.now
    FROM prior, clock
    WHERE m.id = prior.id
    RETURNING m.id, m.conversation_id, m.provider, m.provider_sid, prior.delivery_status AS prior_status
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, clock.now)
    FROM moved, clock
    WHERE c.id = moved.conversation_id
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, from_status, to_status, provider, provider_sid, error_code,
         error_category, detail, occurred_at)
    SELECT moved.id, 'transition', moved.prior_status, %(status)s, moved.provider,
           moved.provider_sid, %(error_code)s, %(error_category)s,
           jsonb_build_object('reason', %(error_message)s::text), clock.now
    FROM moved, clock
)
SELECT prior_status FROM moved;

-- name: messages_alert_facts
-- What a final-failure alert says about its message (the body is never part of it).
SELECT id, conversation_id, from_number, to_number, provider, attempts, request_id, delivery_status
FROM sms_messages
WHERE id = %(message_id)s;

-- name: messages_enqueue
-- The one enqueue of both send paths: one message (POST /sms/send, smsctl send: a single row) or
-- many (POST /sms/send/batch) in one statement, so one round trip. Run as one transaction (the
-- caller's, or on its own in autocommit): every thread, message, outbox row and 'created' event
-- exists together with all the others, or none does. The rows come in as parallel arrays (one bind
-- parameter each, whatever N is) and are unnested WITH ORDINALITY so the answer keeps the request's
-- order. Foreign keys between the CTEs' rows are checked at the end of the statement, so they hold.
-- Priority, send_at and expires_at ride along in the same arrays: no extra round trip.
WITH input AS (
    -- Materialized once (it is read three times and calls a volatile function): each message's id
    -- is made here, so the final SELECT can join the inserted rows back to their position.
    SELECT gen_random_uuid() AS id, t.*
    FROM unnest(%(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[],
                %(providers)s::text[], %(segments)s::int[], %(encodings)s::text[],
                %(idempotency_keys)s::text[], %(request_hashes)s::text[],
                %(priorities)s::text[], %(send_ats)s::timestamptz[],
                %(expires_ats)s::timestamptz[])
         WITH ORDINALITY AS t(from_number, to_number, body, provider, segments, encoding,
                              idempotency_key, request_hash, priority, send_at, expires_at, ord)
),
conversation AS (
    -- Find or create each (from, to) thread once. DO UPDATE (not DO NOTHING) returns the row in
    -- both cases and moves last_message_at; a second first message of the same new pair waits on
    -- the unique index for the first one's commit and then lands on the same row. One multi-row
    -- ON CONFLICT DO UPDATE may not touch a row twice, hence DISTINCT. Sorted, so two concurrent
    -- batches lock shared threads in the same order and cannot deadlock on them.
    INSERT INTO sms_conversations AS c (from_number, to_number)
    SELECT DISTINCT from_number, to_number
    FROM input
    ORDER BY from_number, to_number
    ON CONFLICT (from_number, to_number) DO UPDATE
    SET last_message_at = greatest(c.last_message_at, now())
    RETURNING c.id, c.from_number, c.to_number
),
message AS (
    -- UNIQUE (api_key_id, idempotency_key) makes the second of two concurrent requests with one
    -- key fail here with a unique violation, which the caller turns into a replay or a 409. A
    -- batch refuses the header (api/batch.py), so its rows carry NULL keys and hashes.
    INSERT INTO sms_messages (id, conversation_id, from_number, to_number, body, provider,
                              segments, encoding, api_key_id, idempotency_key, request_hash,
                              request_id, priority, send_at, expires_at)
    SELECT i.id, c.id, i.from_number, i.to_number, i.body, i.provider, i.segments, i.encoding,
           %(api_key_id)s, i.idempotency_key, i.request_hash, %(request_id)s, i.priority,
           i.send_at, i.expires_at
    FROM input i
    JOIN conversation c ON c.from_number = i.from_number AND c.to_number = i.to_number
    RETURNING id, conversation_id, from_number, to_number, provider, segments, encoding,
              created_at, request_hash, priority, send_at, expires_at
),
outbox AS (
    -- Due at send_at, or at once; the claim reads everything it needs here without touching
    -- sms_messages (sms_outbox_pace_idx: sender, priority, next_attempt_at). The priority number
    -- is the word's place in ('high', 'normal', 'low'), as shared.validation.PRIORITIES orders
    -- them and messages_requeue maps them too.
    INSERT INTO sms_outbox (kind, message_id, provider, sender, priority, cost, expires_at,
                            next_attempt_at)
    SELECT 'send_sms', message.id, message.provider, message.from_number,
           array_position(ARRAY['high', 'normal', 'low'], message.priority) - 1,
           message.segments, message.expires_at, coalesce(message.send_at, now())
    FROM message
),
created AS (
    INSERT INTO sms_message_events (message_id, event_type, to_status, provider)
    SELECT message.id, 'created', 'pending', message.provider
    FROM message
)
SELECT m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.segments, m.encoding,
       m.created_at, m.request_hash, m.priority, m.send_at, m.expires_at
FROM message m
JOIN input i ON i.id = m.id
ORDER BY i.ord;

-- name: messages_by_idempotency_key
-- Served by the UNIQUE (api_key_id, idempotency_key) index: the message a key already created.
SELECT id, conversation_id, from_number, to_number, provider, segments, encoding, created_at,
       request_hash, priority, send_at, expires_at
FROM sms_messages
WHERE api_key_id = %(api_key_id)s
  AND idempotency_key = %(idempotency_key)s;

-- name: messages_read_one
-- One message by primary key, for GET /sms/messages/{id}.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at, priority, send_at, expires_at
FROM sms_messages
WHERE id = %(id)s;

-- name: messages_list
-- Newest first over (created_at, id), keyset-paged: the cursor is the last row's (created_at, id),
-- so a page costs the same however deep it is (sms_messages_created_idx; status, conversation and
-- recipient filters have their own indexes; priority has none: three values select too little
-- to pay for one, so it filters the walk of another index). A NULL parameter means "no filter".
-- Run unprepared: a generic plan for the NULL-or-equal filters would ignore the index the given
-- filter needs.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at, priority, send_at, expires_at
FROM sms_messages m
WHERE (%(status)s::text IS NULL OR m.delivery_status = %(status)s::text)
  AND (%(priority)s::text IS NULL OR m.priority = %(priority)s::text)
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

-- name: messages_lock_for_operator
-- The message's current status and sid, locked until the caller's transaction ends.
SELECT id, delivery_status, provider, provider_sid
FROM sms_messages
WHERE id = %(id)s
FOR UPDATE;

-- name: messages_cancel
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

-- name: messages_requeue
-- failed -> pending with a fresh attempt budget, guarded on failed and on no provider sid (a
-- message the provider accepted once is never resent: it could arrive twice). The CHECK wants
-- final_at NULL on pending; the old error moves into the 'requeued' event. A new send_sms row is
-- due at once (or at a send_at still ahead) and carries what the claim reads: the sender whose
-- pace it spends, the priority number (as messages_enqueue maps it), its cost in segments and the
-- message's expires_at (an expiry already past makes the dispatcher expire it, not send it).
-- ON CONFLICT keeps a second concurrent requeue from failing (the guard already stopped it, as
-- the row lock makes the second one see 'pending').
WITH moved AS (
    UPDATE sms_messages m
    SET delivery_status = 'pending', final_at = NULL, error_code = NULL, error_category = NULL,
        error_message = NULL, attempts = 0, status_checked_at = NULL, updated_at = now()
    FROM (SELECT id, error_code, error_category, error_message, attempts
          FROM sms_messages WHERE id = %(id)s) old
    WHERE m.id = old.id AND m.delivery_status = 'failed' AND m.provider_sid IS NULL
    RETURNING m.id, m.conversation_id, m.provider, m.from_number, m.priority, m.segments,
              m.send_at, m.expires_at, old.error_code, old.error_category, old.error_message,
              old.attempts
),
work AS (
    INSERT INTO sms_outbox (kind, message_id, provider, sender, priority, cost, expires_at,
                            attempts, next_attempt_at)
    SELECT 'send_sms', moved.id, moved.provider, moved.from_number,
           array_position(ARRAY['high', 'normal', 'low'], moved.priority) - 1, moved.segments,
           moved.expires_at, 0, greatest(now(), moved.send_at)
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

-- name: messages_failed_since
-- Candidates for `smsctl retry --failed-since`: failed, never accepted, ended at or after the
-- given time (sms_messages_final_idx). Each is then requeued in its own guarded transaction.
SELECT id
FROM sms_messages
WHERE final_at >= %(since)s
  AND delivery_status = 'failed'
  AND provider_sid IS NULL
ORDER BY final_at, id;

-- name: messages_prune
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

-- name: messages_lock_by_id
-- Lock the message first, so callbacks for one message apply one after another and the "from"
-- of the transition we log is the status we really moved from. Primary key lookup; no network
-- call ever happens while this lock is held.
SELECT id, conversation_id, provider, provider_sid, delivery_status
FROM sms_messages
WHERE id = %(message_id)s
FOR UPDATE;

-- name: messages_lock_by_sid
-- Same, for callbacks that carry no id of ours: UNIQUE (provider, provider_sid) serves it.
SELECT id, conversation_id, provider, provider_sid, delivery_status
FROM sms_messages
WHERE provider = %(provider)s AND provider_sid = %(sid)s
FOR UPDATE;

-- name: messages_record_sid
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

-- name: messages_transition
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

-- name: messages_sweep_claim
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

-- name: messages_sweep_settle
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
