-- sms_messages: enqueue, reads, locks, status changes, operator actions, sweeper bookkeeping,
-- retention. One file per table (River's habit): a query lives with the table it is about.
--
-- A message named by its id is found by the primary key and only then tested: `(... ) IS TRUE`
-- puts a test of delivery_status (or provider_sid) in a form no index can serve. Statistics taken
-- while no message had that status (ANALYZE samples 30,000 rows) make it look like one row, and
-- sms_messages_status_idx then looked cheaper than the primary key: a backlog of pending messages
-- was read whole to find one (sql/queries/outbox.sql says the same of the dispatcher's queries).

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
    WHERE m.id = %(message_id)s AND (m.delivery_status = ANY(%(sources)s::text[])) IS TRUE
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
-- The enqueue of one request: one message (POST /sms/send alone, smsctl send: a single row) or
-- many (POST /sms/send/batch) in one statement, so one round trip. Run as one transaction (the
-- caller's, or on its own in autocommit): every thread, message, outbox row and 'created' event
-- exists together with all the others, or none does. The rows come in as parallel arrays (one bind
-- parameter each, whatever N is); the answer keeps the request's order (`ord`, 1-based): either
-- the messages created, or the refusals and nothing written: (opted_out) the rows whose recipient
-- opted out of their sender, (over_limit) the first row of each recipient the request would take
-- past recipient_limit, the key's recipient_hourly_limit (NULL: none). The request's key, request
-- id and limit are every row's (array_fill), and one refusal refuses all (each_alone false).
-- The statement itself is sms_messages_enqueue_rows (migrations 0014, 0017), a PL/pgSQL function,
-- because PL/pgSQL keeps its plan per server connection: behind a transaction-pooling PgBouncer
-- nothing is prepared (shared/db.py), and the statement, sent as it is, was parsed and planned on
-- every request (about 1 ms; enqueue through PgBouncer at 0.79 of direct). This call is short to
-- plan.
SELECT id, conversation_id, from_number, to_number, provider, segments, encoding, created_at,
       request_hash, priority, send_at, expires_at, ord, opted_out, over_limit
FROM sms_messages_enqueue_rows(
    %(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[], %(providers)s::text[],
    %(segments)s::int[], %(encodings)s::text[], %(idempotency_keys)s::text[],
    %(request_hashes)s::text[], %(priorities)s::text[], %(send_ats)s::timestamptz[],
    %(expires_ats)s::timestamptz[],
    array_fill(%(api_key_id)s::bigint, ARRAY[cardinality(%(to_numbers)s::text[])]),
    array_fill(%(request_id)s::text, ARRAY[cardinality(%(to_numbers)s::text[])]),
    array_fill(%(recipient_limit)s::int, ARRAY[cardinality(%(to_numbers)s::text[])]),
    false);

-- name: messages_enqueue_group
-- A group commit's requests (POST /sms/send, api/group_commit.py), one row each, in ONE call of
-- the function messages_enqueue calls: one statement's overhead for the group instead of one per
-- request (server CPU per row measured ~0.2 ms for one 16-row call, 0.64-0.97 ms for 16 one-row
-- calls). Each row carries its request's key, request id and limit, and is judged as if it were
-- written alone after the rows before it (each_alone): a refusal (opted_out, over_limit) is its
-- own row's and the others are written; the answer has one row per input row, in order (`ord`).
SELECT id, conversation_id, from_number, to_number, provider, segments, encoding, created_at,
       request_hash, priority, send_at, expires_at, ord, opted_out, over_limit
FROM sms_messages_enqueue_rows(
    %(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[], %(providers)s::text[],
    %(segments)s::int[], %(encodings)s::text[], %(idempotency_keys)s::text[],
    %(request_hashes)s::text[], %(priorities)s::text[], %(send_ats)s::timestamptz[],
    %(expires_ats)s::timestamptz[], %(api_key_ids)s::bigint[], %(request_ids)s::text[],
    %(recipient_limits)s::int[], true);

-- name: messages_by_idempotency_key
-- Served by the UNIQUE (api_key_id, idempotency_key) index: the message a key already created.
SELECT id, conversation_id, from_number, to_number, provider, segments, encoding, created_at,
       request_hash, priority, send_at, expires_at
FROM sms_messages
WHERE api_key_id = %(api_key_id)s
  AND idempotency_key = %(idempotency_key)s;

-- name: messages_read_one
-- One message by primary key, for GET /sms/messages/{id} (and cancel's and retry's answer).
-- `owner` is the tenancy guard (messages_lock_for_operator says how): another key's message is
-- not found, exactly as an unknown id.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at, priority, send_at, expires_at
FROM sms_messages
WHERE id = %(id)s
  AND (%(owner)s::bigint IS NULL OR api_key_id = %(owner)s::bigint);

-- name: messages_list
-- Newest first over (created_at, id), keyset-paged: the cursor is the last row's (created_at, id),
-- so a page costs the same however deep it is (sms_messages_created_idx; status, conversation and
-- recipient filters have their own indexes; priority has none: three values select too little
-- to pay for one, so it filters the walk of another index). A NULL parameter means "no filter".
-- `owner` is the tenancy guard: a sender key lists only the messages it created (walking
-- sms_messages_key_created_idx (api_key_id, created_at, id) when no other filter is narrower);
-- NULL (an operator key, smsctl) lists every key's.
-- Run unprepared: a generic plan for the NULL-or-equal filters would ignore the index the given
-- filter needs.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at, priority, send_at, expires_at
FROM sms_messages m
WHERE (%(owner)s::bigint IS NULL OR m.api_key_id = %(owner)s::bigint)
  AND (%(status)s::text IS NULL OR m.delivery_status = %(status)s::text)
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
-- The message's current status and sid, locked until the caller's transaction ends. `owner` is
-- the tenancy guard: a sender key's id finds only the messages that key created (another key's id
-- is as unknown as a made-up one); NULL (an operator key, smsctl) finds any.
SELECT id, delivery_status, provider, provider_sid
FROM sms_messages
WHERE id = %(id)s
  AND (%(owner)s::bigint IS NULL OR api_key_id = %(owner)s::bigint)
FOR UPDATE;

-- name: messages_recipient_hour
-- recipient_hourly_limit's Retry-After, asked only after messages_enqueue refused a request
-- (`limited`), so off the send path and after the locks were released: for each recipient a
-- request writes to (and how many messages it writes to them), this key's outbound messages to
-- them created in the trailing hour (transaction clock, as created_at). Only recipients the request would take over the limit come back, each
-- with the time enough of those messages will have left the hour for the request to fit (NULL:
-- the request alone is over the limit). sms_messages_to_idx (to_number, created_at) finds a
-- recipient's hour; the key and direction filter those few rows. The OFFSET subquery runs only
-- for recipients over the limit.
WITH clock AS (
    SELECT now() AS now
)
SELECT a.to_number, clock.now,
       (SELECT m.created_at + interval '1 hour'
        FROM sms_messages m
        WHERE m.to_number = a.to_number
          AND m.created_at > clock.now - interval '1 hour'
          AND m.api_key_id = %(api_key_id)s
          AND m.direction = 'outbound'
        ORDER BY m.created_at
        OFFSET r.recent + a.n - %(limit)s::integer - 1
        LIMIT 1) AS fits_at
FROM unnest(%(to_numbers)s::text[], %(counts)s::integer[]) AS a(to_number, n)
CROSS JOIN clock
CROSS JOIN LATERAL (
    SELECT count(*) AS recent
    FROM sms_messages m
    WHERE m.to_number = a.to_number
      AND m.created_at > clock.now - interval '1 hour'
      AND m.api_key_id = %(api_key_id)s
      AND m.direction = 'outbound'
) r
WHERE r.recent + a.n > %(limit)s::integer;

-- name: messages_cancel
-- pending -> canceled, guarded on pending (zero rows: someone moved it first). Its outbox row goes
-- in the same statement, so no dispatcher can claim it afterwards; the conversation is touched and
-- the 'canceled' event records pending -> canceled.
WITH moved AS (
    UPDATE sms_messages
    SET delivery_status = 'canceled', final_at = now(), updated_at = now()
    WHERE id = %(id)s AND (delivery_status = 'pending') IS TRUE
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
    WHERE m.id = old.id AND (m.delivery_status = 'failed' AND m.provider_sid IS NULL) IS TRUE
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
      AND (delivery_status = ANY(%(sources)s)) IS TRUE
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

-- name: messages_receive
-- An inbound message (a reply, or an opt-out / opt-in keyword) as one statement, so one
-- transaction: its thread, the message (direction inbound, status received, final at once), its
-- 'received' event and what its keyword does to sms_suppressions. Stored once per provider sid
-- (UNIQUE (provider, provider_sid)): a webhook the provider posts again finds `known` and changes
-- nothing, its keyword included (a repeated STOP must not undo a START sent since). Two copies
-- racing both miss `known`; the second waits on the unique index, inserts nothing and returns no
-- row, which the caller reads as "already stored".
WITH input AS (
    SELECT %(provider)s::text AS provider, %(sid)s::text AS sid,
           %(our_number)s::text AS our_number, %(their_number)s::text AS their_number,
           %(body)s::text AS body, %(segments)s::int AS segments, %(encoding)s::text AS encoding,
           %(keyword)s::text AS keyword, %(request_id)s::text AS request_id,
           %(detail)s::jsonb AS detail
),
known AS (
    SELECT m.id, m.conversation_id
    FROM sms_messages m, input i
    WHERE m.provider = i.provider AND m.provider_sid = i.sid
),
conversation AS (
    -- Threads are keyed (our number, the other party), as the outbound messages key them, so a
    -- reply lands beside the messages it answers. DO UPDATE returns the row, new or not, and
    -- moves last_message_at.
    INSERT INTO sms_conversations AS c (from_number, to_number)
    SELECT i.our_number, i.their_number
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM known)
    ON CONFLICT (from_number, to_number) DO UPDATE
    SET last_message_at = greatest(c.last_message_at, now())
    RETURNING c.id
),
owner AS (
    -- The API key of the thread's latest outbound message (NULL when none, or when smsctl sent
    -- it), so the key that wrote sees the answer: sms_messages_conversation_idx, read backwards.
    SELECT (SELECT m.api_key_id
            FROM sms_messages m
            WHERE m.conversation_id = c.id AND m.direction = 'outbound'
            ORDER BY m.created_at DESC, m.id DESC
            LIMIT 1) AS api_key_id
    FROM conversation c
),
message AS (
    INSERT INTO sms_messages AS m (conversation_id, direction, from_number, to_number, body,
                                   provider, provider_sid, delivery_status, segments, encoding,
                                   api_key_id, request_id, final_at)
    SELECT c.id, 'inbound', i.their_number, i.our_number, i.body, i.provider, i.sid, 'received',
           i.segments, i.encoding, o.api_key_id, i.request_id, now()
    FROM input i, conversation c, owner o
    ON CONFLICT (provider, provider_sid) DO NOTHING
    RETURNING m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.provider_sid
),
received AS (
    INSERT INTO sms_message_events (message_id, event_type, to_status, provider, provider_sid,
                                    detail)
    SELECT m.id, 'received', 'received', m.provider, m.provider_sid, i.detail
    FROM message m, input i
),
suppressed AS (
    -- STOP (and its synonyms): no more messages from the number texted; STOPALL: from any of
    -- ours. The inbound message is the cause. A suppression of the same pair that exists already
    -- stays as it is (sms_suppressions_once).
    INSERT INTO sms_suppressions (phone_number, sender_number, reason, source_message_id)
    SELECT m.from_number, CASE WHEN i.keyword = 'stopall' THEN NULL ELSE m.to_number END,
           'stop_keyword', m.id
    FROM message m, input i
    WHERE i.keyword IN ('stop', 'stopall')
    ON CONFLICT (phone_number, coalesce(sender_number, '')) DO NOTHING
    RETURNING id
),
lifted AS (
    -- START / UNSTOP / YES lifts what the person's own word or their provider's opt-out record
    -- put on this number (stop_keyword, provider_opt_out), and an every-sender one they made with
    -- STOPALL. A suppression an operator or an API call made is theirs to lift, never a text's.
    DELETE FROM sms_suppressions s
    USING message m, input i
    WHERE i.keyword = 'start'
      AND s.phone_number = m.from_number
      AND ((s.sender_number = m.to_number AND s.reason IN ('stop_keyword', 'provider_opt_out'))
           OR (s.sender_number IS NULL AND s.reason = 'stop_keyword'))
    RETURNING s.id
)
SELECT m.id, m.conversation_id, true AS created,
       (SELECT count(*) FROM suppressed) AS suppressed, (SELECT count(*) FROM lifted) AS lifted
FROM message m
UNION ALL
SELECT k.id, k.conversation_id, false, 0, 0
FROM known k;

-- name: messages_failed_list
-- The ops console's failed messages: the DBA view sms_failed_messages (requeueable as the view
-- and `smsctl retry` judge it), most recent failure first, keyset-paged on (failed_at, id): the
-- view's rows are final, so failed_at is never NULL, and sms_messages_final_idx serves the order.
SELECT id, failed_at, delivery_status, provider, from_number, to_number, error_category,
       error_code, error_message, attempts, provider_sid, requeueable, created_at
FROM sms_failed_messages
WHERE (%(after_failed_at)s::timestamptz IS NULL
       OR (failed_at, id) < (%(after_failed_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s;
