-- Queries of the benchmark only (bench/). Loaded with shared.queries.parse; never used by the service.

-- name: bench_seed_messages
-- What N calls of shared.messages.enqueue (sql/queries/messages.sql messages_enqueue) leave behind,
-- in one statement and one transaction: the (from, to) threads, the pending messages, one due
-- outbox row each (no 'created' event since migration 0019). Each row names its sender, whose pace the claim spends
-- (the sender must be in sms_senders, or the claim never takes the row: bench_senders_pace), its
-- priority (0 high, 1 normal, 2 low, as messages_enqueue maps the word) and its cost in segments.
-- Threads are inserted DISTINCT: one multi-row ON CONFLICT DO UPDATE may not touch the same row
-- twice. All rows become visible at one commit, which is when the drain's clock starts.
WITH input AS (
    SELECT *
    FROM unnest(%(from_numbers)s::text[], %(to_numbers)s::text[], %(bodies)s::text[],
                %(segments)s::int[], %(encodings)s::text[], %(request_ids)s::text[],
                %(priorities)s::text[])
         AS t(from_number, to_number, body, segments, encoding, request_id, priority)
),
conversation AS (
    INSERT INTO sms_conversations AS c (from_number, to_number)
    SELECT DISTINCT from_number, to_number FROM input
    ON CONFLICT (from_number, to_number) DO UPDATE
    SET last_message_at = greatest(c.last_message_at, now())
    RETURNING c.id, c.from_number, c.to_number
),
message AS (
    INSERT INTO sms_messages (conversation_id, from_number, to_number, body, provider, segments,
                              encoding, request_id, priority)
    SELECT c.id, i.from_number, i.to_number, i.body, %(provider)s, i.segments, i.encoding,
           i.request_id, i.priority
    FROM input i
    JOIN conversation c ON c.from_number = i.from_number AND c.to_number = i.to_number
    RETURNING id, provider, from_number, segments, priority
)
INSERT INTO sms_outbox (kind, message_id, provider, sender, priority, cost)
SELECT 'send_sms', message.id, message.provider, message.from_number,
       array_position(ARRAY['high', 'normal', 'low'], message.priority) - 1, message.segments
FROM message;

-- name: bench_senders_pace
-- The senders a measurement sends from, at the pace it measures with, their pace clocks reset
-- (each run starts with a full burst). An unpaced run uses SENDER_DEFAULT_MPS's 10000 (the
-- CHECK's maximum): no drain of this bench comes near it.
INSERT INTO sms_senders AS s (phone_number, provider, mps, burst)
SELECT number, %(provider)s, %(mps)s, %(burst)s
FROM unnest(%(numbers)s::text[]) AS t(number)
ON CONFLICT (phone_number) DO UPDATE
SET mps = EXCLUDED.mps, burst = EXCLUDED.burst, pace_tat = '-infinity', updated_at = now();

-- name: bench_clear_messages
-- Between runs: every message and its history go; API keys and senders stay. CASCADE takes along
-- whatever else points at messages (suppressions caused by one, from 0007), so a new table that
-- references them never stops the bench; nothing the bench keeps references a message.
TRUNCATE sms_outbox, sms_message_events, sms_alerts, sms_messages, sms_conversations,
         sms_provider_pauses
CASCADE;

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
-- messages (sid, submitted and final times, spread over the past) and three events each, as a
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
CROSS JOIN (VALUES ('attempt_started', 1, NULL::text, NULL::text),
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
       -- sms_message_events is partitioned (0010): its size and rows are its partitions'.
       (SELECT sum(greatest(c.reltuples, 0))::bigint
        FROM pg_partition_tree('sms_message_events') p
        JOIN pg_class c ON c.oid = p.relid
        WHERE p.isleaf) AS events_rows,
       (SELECT sum(pg_total_relation_size(p.relid))::bigint
        FROM pg_partition_tree('sms_message_events') p
        WHERE p.isleaf) AS events_bytes;

-- name: bench_unpaced_index
-- Claim cost: the index the claim before pacing scanned (0006_pace.sql replaced it with
-- sms_outbox_pace_idx and a due index for unpaced work only). The bench's own database only, for
-- bench_claim_unpaced; dropped again after the measurement (bench_unpaced_index_drop).
CREATE INDEX IF NOT EXISTS bench_outbox_next_attempt_idx ON sms_outbox (next_attempt_at);

-- name: bench_unpaced_index_drop
DROP INDEX IF EXISTS bench_outbox_next_attempt_idx;

-- name: bench_idle_senders
-- Claim cost with idle senders: %(count)s registered numbers with nothing queued (+1332111NNNNNN),
-- never used: owed longer than any busy sender, and before them in number order.
INSERT INTO sms_senders (phone_number, provider, mps, burst)
SELECT '+1332111' || lpad(k::text, 6, '0'), 'twilio', 1, 1
FROM generate_series(0, %(count)s - 1) AS k
ON CONFLICT (phone_number) DO NOTHING;

-- name: bench_idle_senders_drop
DELETE FROM sms_senders WHERE phone_number LIKE '+1332111%%';

-- name: bench_claim_unpaced
-- Claim cost, "no pacing": the dispatcher's claim as it was before issue 12 (outbox_claim_due at
-- commit d902328), unchanged but for its name: the first %(limit)s due rows by next_attempt_at
-- (bench_outbox_next_attempt_idx), FOR UPDATE SKIP LOCKED, leased in the same statement and
-- returned with their message's columns. No sender row is read, locked or written.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
due AS (
    SELECT o.id, o.state = 'leased' AS rescued
    FROM sms_outbox o
    WHERE o.next_attempt_at <= (SELECT now FROM clock)
      AND (o.provider IS NULL OR NOT EXISTS (
            SELECT 1 FROM sms_provider_pauses p
            WHERE p.provider = o.provider AND p.paused_until > (SELECT now FROM clock)))
    ORDER BY o.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
),
claimed AS (
    UPDATE sms_outbox o
    SET state = 'leased',
        lease_owner = %(owner)s,
        lease_expires_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        next_attempt_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        attempts = CASE WHEN due.rescued AND o.attempt_started_at IS NULL
                        THEN greatest(o.attempts, 1) ELSE o.attempts + 1 END,
        updated_at = clock.now
    FROM due, clock
    WHERE o.id = due.id
    RETURNING o.id, o.kind, o.message_id, o.alert_id, o.provider, o.attempts,
              o.attempt_started_at, o.reconcile_misses, o.lease_expires_at, due.rescued,
              clock.now AS claimed_at, o.last_error_code, o.last_error_category, o.last_error
)
SELECT c.id, c.kind, c.attempts AS attempt, c.lease_expires_at, c.claimed_at, c.rescued,
       c.attempt_started_at AS unresolved_since, c.message_id, c.alert_id, c.provider,
       m.from_number, m.to_number, m.body, m.delivery_status, m.conversation_id, m.request_id,
       c.last_error_code, c.last_error_category, c.last_error, m.segments, m.provider_sid,
       c.reconcile_misses
FROM claimed c
LEFT JOIN sms_messages m ON m.id = c.message_id
ORDER BY c.id;

-- name: bench_claim_state
-- Claim cost: how many rows the claims left leased and how many are still due (a check that
-- both claims took what they were asked for, and that the queue never ran dry).
SELECT count(*) FILTER (WHERE state = 'leased') AS leased,
       count(*) FILTER (WHERE state = 'ready' AND next_attempt_at <= now()) AS due
FROM sms_outbox;

-- name: bench_attempts_started
-- Pace: when each send attempt started (the dispatcher's 'attempt_started' event, database clock,
-- committed just before the provider call) and its cost, per sender: what the dispatchers put on
-- the wire, before the network and the provider's ingress add their own jitter.
SELECT m.from_number, extract(epoch FROM e.occurred_at)::float8 AS at, m.segments
FROM sms_message_events e
JOIN sms_messages m ON m.id = e.message_id
WHERE e.event_type = 'attempt_started'
ORDER BY m.from_number, e.occurred_at;
