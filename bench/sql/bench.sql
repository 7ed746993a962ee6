-- Queries of the benchmark only (bench/). Loaded with shared.queries.parse; never used by the service.

-- name: bench_seed_messages
-- What N calls of shared.messages.enqueue (sql/queries/api.sql messages_enqueue) leave behind,
-- in one statement and one transaction: the (from, to) threads, the pending messages, one due
-- outbox row and one 'created' event each. Threads are inserted DISTINCT: one multi-row
-- ON CONFLICT DO UPDATE may not touch the same row twice. All rows become visible at one commit,
-- which is when the drain's clock starts.
WITH input AS (
    SELECT *
    FROM unnest(%(to_numbers)s::text[], %(bodies)s::text[], %(segments)s::int[],
                %(encodings)s::text[], %(request_ids)s::text[])
         AS t(to_number, body, segments, encoding, request_id)
),
conversation AS (
    INSERT INTO sms_conversations AS c (from_number, to_number)
    SELECT DISTINCT %(from_number)s::text, to_number FROM input
    ON CONFLICT (from_number, to_number) DO UPDATE
    SET last_message_at = greatest(c.last_message_at, now())
    RETURNING c.id, c.to_number
),
message AS (
    INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider, segments,
                              encoding, request_id)
    SELECT c.id, %(from_number)s, i.to_number, i.body, %(provider)s, i.segments, i.encoding,
           i.request_id
    FROM input i
    JOIN conversation c ON c.to_number = i.to_number
    RETURNING id, provider
),
outbox AS (
    INSERT INTO sms_outbox (kind, message_id, provider)
    SELECT 'send_sms', message.id, message.provider
    FROM message
)
INSERT INTO sms_message_events (message_id, event_type, to_status, provider)
SELECT message.id, 'created', 'pending', message.provider
FROM message;

-- name: bench_clear_messages
-- Between runs: every message and its history go; API keys and senders stay.
TRUNCATE sms_outbox, sms_message_events, sms_alerts, sms_messages, sms_conversations,
         sms_provider_pauses;

-- name: bench_drain_state
-- Progress and correctness of a drain: what is left in the hot table and how the messages stand.
SELECT (SELECT count(*) FROM sms_outbox) AS outbox,
       count(*) FILTER (WHERE delivery_status = 'pending') AS pending,
       count(*) FILTER (WHERE delivery_status = 'queued') AS queued,
       count(*) FILTER (WHERE delivery_status = 'failed') AS failed,
       count(*) AS messages,
       max(submitted_at) AS last_submitted
FROM sms_messages;

-- name: bench_outbox_depth
-- Polled while a drain runs (every 50 ms): cheap, the hot table is small.
SELECT count(*) FROM sms_outbox;

-- name: bench_sent_times
-- When each message left: the time the dispatcher recorded its acceptance (database clock).
SELECT max(submitted_at) AS last_submitted, min(submitted_at) AS first_submitted
FROM sms_messages;
