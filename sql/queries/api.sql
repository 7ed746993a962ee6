-- Queries of the HTTP API and smsctl: API keys, senders, conversations, the one enqueue of both
-- send paths (one message or a batch), idempotency look-ups and the message read.

-- name: api_keys_insert
-- Only the SHA-256 of the key reaches the database; the key is shown once by the caller.
INSERT INTO sms_api_keys (name, key_sha256)
VALUES (%(name)s, %(key_sha256)s)
RETURNING id;

-- name: api_keys_authenticate
-- Served by the unique index on key_sha256. A revoked key is as unknown as a wrong one.
SELECT id
FROM sms_api_keys
WHERE key_sha256 = %(key_sha256)s
  AND revoked_at IS NULL;

-- name: api_keys_authenticate_with_default_sender
-- POST /sms/send's first read, one round trip: the key (as api_keys_authenticate: unique index on
-- key_sha256, revoked keys unknown) and the default sender (partial unique index
-- sms_senders_one_default), so a request naming no sender needs no second read. Always one row.
SELECT k.id AS api_key_id, s.phone_number, s.provider, s.enabled, s.is_default
FROM (SELECT 1) AS one
LEFT JOIN sms_api_keys k ON k.key_sha256 = %(key_sha256)s AND k.revoked_at IS NULL
LEFT JOIN sms_senders s ON s.is_default;

-- name: api_keys_list
-- Small table, read by operators: every key, oldest first; the hash is not shown.
SELECT id, name, created_at, revoked_at
FROM sms_api_keys
ORDER BY id;

-- name: api_keys_revoke
-- Guarded on revoked_at IS NULL: a second revoke changes nothing and returns no row.
UPDATE sms_api_keys
SET revoked_at = now()
WHERE id = %(id)s
  AND revoked_at IS NULL
RETURNING id;

-- name: senders_lock
-- Two API processes starting at once register and pick the default one after the other, so the
-- partial unique index on is_default never sees a transient second default.
SELECT pg_advisory_xact_lock(7715002);

-- name: senders_register
-- Start-up registration of a configured number. On conflict only the provider follows the
-- configuration: an operator who disabled the number in SQL keeps it disabled across restarts.
INSERT INTO sms_senders (phone_number, provider)
VALUES (%(phone_number)s, %(provider)s)
ON CONFLICT (phone_number) DO UPDATE
SET provider = EXCLUDED.provider, updated_at = now()
WHERE sms_senders.provider <> EXCLUDED.provider;

-- name: senders_clear_default
-- Clear the old default before setting the new one (a partial unique index cannot be deferred).
UPDATE sms_senders
SET is_default = false, updated_at = now()
WHERE is_default
  AND phone_number <> %(phone_number)s;

-- name: senders_set_default
-- Guarded on enabled, as the CHECK (NOT is_default OR enabled) demands; returns the row it set.
UPDATE sms_senders
SET is_default = true, updated_at = now()
WHERE phone_number = %(phone_number)s
  AND enabled
RETURNING phone_number;

-- name: senders_lookup
-- One sender by its number (primary key).
SELECT phone_number, provider, enabled, is_default
FROM sms_senders
WHERE phone_number = %(phone_number)s;

-- name: senders_default
-- The default sender (at most one row: partial unique index sms_senders_one_default).
SELECT phone_number, provider, enabled, is_default
FROM sms_senders
WHERE is_default;

-- name: conversations_lookup
-- By primary key, to check a conversation_id named in a request against its (from, to) pair.
SELECT id, from_number, to_number
FROM sms_conversations
WHERE id = %(id)s;

-- name: messages_enqueue
-- The one enqueue of both send paths: one message (POST /sms/send, smsctl send: a single row) or
-- many (POST /sms/send/batch) in one statement, so one round trip. Run as one transaction (the
-- caller's, or on its own in autocommit): every thread, message, outbox row and 'created' event
-- exists together with all the others, or none does. The rows come in as parallel arrays (one bind
-- parameter each, whatever N is) and are unnested WITH ORDINALITY so the answer keeps the request's
-- order. Foreign keys between the CTEs' rows are checked at the end of the statement, so they hold.
WITH input AS (
    -- Materialized once (it is read three times and calls a volatile function): each message's id
    -- is made here, so the final SELECT can join the inserted rows back to their position.
    SELECT gen_random_uuid() AS id, t.*
    FROM unnest(%(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[],
                %(providers)s::text[], %(segments)s::int[], %(encodings)s::text[],
                %(idempotency_keys)s::text[], %(request_hashes)s::text[])
         WITH ORDINALITY AS t(from_number, to_number, body, provider, segments, encoding,
                              idempotency_key, request_hash, ord)
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
                              request_id)
    SELECT i.id, c.id, i.from_number, i.to_number, i.body, i.provider, i.segments, i.encoding,
           %(api_key_id)s, i.idempotency_key, i.request_hash, %(request_id)s
    FROM input i
    JOIN conversation c ON c.from_number = i.from_number AND c.to_number = i.to_number
    RETURNING id, conversation_id, from_number, to_number, provider, segments, encoding,
              created_at, request_hash
),
outbox AS (
    -- Due at once (next_attempt_at defaults to now()); the dispatcher's claim index picks them up.
    INSERT INTO sms_outbox (kind, message_id, provider)
    SELECT 'send_sms', message.id, message.provider
    FROM message
),
created AS (
    INSERT INTO sms_message_events (message_id, event_type, to_status, provider)
    SELECT message.id, 'created', 'pending', message.provider
    FROM message
)
SELECT m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.segments, m.encoding,
       m.created_at, m.request_hash
FROM message m
JOIN input i ON i.id = m.id
ORDER BY i.ord;

-- name: messages_by_idempotency_key
-- Served by the UNIQUE (api_key_id, idempotency_key) index: the message a key already created.
SELECT id, conversation_id, from_number, to_number, provider, segments, encoding, created_at,
       request_hash
FROM sms_messages
WHERE api_key_id = %(api_key_id)s
  AND idempotency_key = %(idempotency_key)s;

-- name: messages_read_one
-- One message by primary key, for GET /sms/messages/{id}.
SELECT id, conversation_id, direction, from_number, to_number, body, provider, provider_sid,
       delivery_status, error_code, error_category, error_message, segments, encoding, attempts,
       request_id, created_at, updated_at, submitted_at, final_at
FROM sms_messages
WHERE id = %(id)s;

-- name: message_events_timeline
-- A message's history in insertion order, served by sms_message_events_message_idx (message_id, id).
SELECT id, event_type, attempt, from_status, to_status, provider, provider_sid, error_code,
       error_category, detail, occurred_at
FROM sms_message_events
WHERE message_id = %(message_id)s
ORDER BY id;

-- name: wakeup_notify
-- Sent on its own connection after the enqueue committed, never inside it: NOTIFY takes a
-- cluster-wide lock at commit and so serializes every committing enqueue.
NOTIFY sms_outbox_wakeup;
