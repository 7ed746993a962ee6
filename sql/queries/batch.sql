-- POST /sms/send/batch: many messages written by one statement (sql/queries/api.sql's
-- messages_enqueue, for N rows at once).

-- name: messages_enqueue_batch
-- The whole batch in one statement, run inside the caller's transaction: every thread, message,
-- outbox row and 'created' event exists together with all the others, or none does. The rows come
-- in as parallel arrays (one bind parameter each, whatever N is) and are unnested WITH ORDINALITY
-- so the answer keeps the request's order. Foreign keys between the CTEs' rows are checked at the
-- end of the statement, so they hold.
WITH input AS (
    -- Materialized once (it is read three times and calls a volatile function): each message's id
    -- is made here, so the final SELECT can join the inserted rows back to their position.
    SELECT gen_random_uuid() AS id, t.*
    FROM unnest(%(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[],
                %(providers)s::text[], %(segments)s::int[], %(encodings)s::text[])
         WITH ORDINALITY AS t(from_number, to_number, body, provider, segments, encoding, ord)
),
conversation AS (
    -- Find or create each (from, to) thread once: one multi-row ON CONFLICT DO UPDATE may not
    -- touch a row twice, hence DISTINCT. Sorted, so two concurrent batches lock shared threads in
    -- the same order and cannot deadlock on them.
    INSERT INTO sms_conversations AS c (from_number, to_number)
    SELECT DISTINCT from_number, to_number
    FROM input
    ORDER BY from_number, to_number
    ON CONFLICT (from_number, to_number) DO UPDATE
    SET last_message_at = greatest(c.last_message_at, now())
    RETURNING c.id, c.from_number, c.to_number
),
message AS (
    -- No idempotency key: a batch refuses the header (api/batch.py), so the columns stay NULL.
    INSERT INTO sms_messages (id, conversation_id, from_number, to_number, body, provider,
                              segments, encoding, api_key_id, request_id)
    SELECT i.id, c.id, i.from_number, i.to_number, i.body, i.provider, i.segments, i.encoding,
           %(api_key_id)s, %(request_id)s
    FROM input i
    JOIN conversation c ON c.from_number = i.from_number AND c.to_number = i.to_number
    RETURNING id, conversation_id, from_number, to_number, provider, segments, encoding,
              created_at
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
       m.created_at, NULL::text AS request_hash
FROM message m
JOIN input i ON i.id = m.id
ORDER BY i.ord;
