-- Queries of the benchmark only (bench/). Loaded with shared.queries.parse; never used by the service.

-- name: bench_seed_messages
-- What N calls of shared.messages.enqueue (sql/queries/messages.sql messages_enqueue) leave behind,
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

-- name: bench_history_threads
-- Growth: the threads the history messages belong to, the drains' own recipients (seed.recipient).
INSERT INTO sms_conversations (from_number, to_number)
SELECT %(from_number)s, '+1415200' || lpad(k::text, 4, '0')
FROM generate_series(0, %(recipients)s - 1) AS k
ON CONFLICT (from_number, to_number) DO NOTHING;

-- name: bench_history_insert
-- Growth: messages %(first)s..%(last)s of a finished history, in one statement: delivered
-- messages (sid, submitted and final times, spread over the past) and four events each, as a
-- real send leaves them. None has an outbox row: finished work has left the hot table.
WITH thread AS (
    SELECT id, row_number() OVER (ORDER BY to_number) - 1 AS k
    FROM sms_conversations
    WHERE from_number = %(from_number)s
),
message AS (
    INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider,
                              provider_sid, delivery_status, segments, encoding, attempts,
                              request_id, created_at, updated_at, submitted_at, final_at)
    SELECT t.id, %(from_number)s, '+1415200' || lpad((g %% %(recipients)s)::text, 4, '0'),
           'history message ' || g, 'twilio', 'HIST' || g, 'delivered', 1, 'GSM-7', 1,
           'history', x.at, x.at + interval '5 s', x.at, x.at + interval '5 s'
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    CROSS JOIN LATERAL (
        SELECT now() - make_interval(secs => (%(total)s - g)::float8) - interval '1 hour' AS at
    ) AS x
    JOIN thread t ON t.k = g %% %(recipients)s
    RETURNING id, provider_sid, created_at
)
INSERT INTO sms_message_events (message_id, event_type, attempt, from_status, to_status,
                                provider, provider_sid, occurred_at)
SELECT m.id, e.event_type, e.attempt, e.from_status, e.to_status, 'twilio', m.provider_sid,
       m.created_at
FROM message m
CROSS JOIN (VALUES ('created', NULL::int, NULL::text, 'pending'),
                   ('attempt_started', 1, NULL, NULL),
                   ('transition', NULL, 'pending', 'queued'),
                   ('transition', NULL, 'queued', 'delivered'))
           AS e(event_type, attempt, from_status, to_status);

-- name: bench_forget_open
-- Growth: after a measurement, its own messages go (pending claims rolled back, or drained to
-- queued); the delivered history stays. Outbox rows and events go with them (ON DELETE CASCADE).
DELETE FROM sms_messages
WHERE delivery_status <> 'delivered';

-- name: bench_table_sizes
-- Growth: how big the hot table and the history are (rows estimated from the statistics).
SELECT (SELECT count(*) FROM sms_outbox) AS outbox_rows,
       pg_total_relation_size('sms_outbox') AS outbox_bytes,
       (SELECT reltuples::bigint FROM pg_class WHERE oid = 'sms_messages'::regclass) AS messages_rows,
       pg_total_relation_size('sms_messages') AS messages_bytes,
       (SELECT reltuples::bigint FROM pg_class WHERE oid = 'sms_message_events'::regclass)
           AS events_rows,
       pg_total_relation_size('sms_message_events') AS events_bytes;
