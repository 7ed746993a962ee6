-- 0014: the enqueue statement (messages_enqueue) moves into a PL/pgSQL function. Behind a
-- transaction-pooling PgBouncer the processes prepare nothing (shared/db.py), so the statement,
-- the largest we send, was parsed and planned on every request: about 1 ms of server CPU per
-- POST /sms/send (EXPLAIN (SUMMARY) planning time; unprepared vs prepared on one connection:
-- +0.7 to 0.9 ms a statement), a fifth of the enqueue's rate through the pooler (bench
-- pgbouncer: 0.79 of direct). PL/pgSQL keeps each statement's plan for the life of the server
-- connection, which PgBouncer keeps open across its clients, so the plan is made once per server
-- connection whichever client calls; the call itself is a short statement to parse and plan.
-- Direct connections prepare the call as they prepared the statement.
--
-- The function runs the statement as it was (its columns now qualified): one statement,
-- so one snapshot and all or nothing; SECURITY INVOKER (the default), so the grants, the row
-- policies and the fan-out triggers of 0008 apply to the caller's role as before; VOLATILE, so
-- the statement takes its snapshot when it starts (after the call's) and
-- sms_recipients_over_limit still counts in a snapshot of its own taken after its locks. A
-- unique violation (the idempotency key) leaves it as it is, constraint name and all.
CREATE FUNCTION sms_messages_enqueue(
    p_from_numbers text[], p_to_numbers text[], p_bodies text[], p_providers text[],
    p_segments int[], p_encodings text[], p_idempotency_keys text[], p_request_hashes text[],
    p_priorities text[], p_send_ats timestamptz[], p_expires_ats timestamptz[],
    p_api_key_id bigint, p_request_id text, p_recipient_limit int)
RETURNS TABLE (
    id uuid, conversation_id uuid, from_number text, to_number text, provider text,
    segments int, encoding text, created_at timestamptz, request_hash text, priority text,
    send_at timestamptz, expires_at timestamptz, ord bigint, opted_out boolean,
    over_limit boolean)
LANGUAGE plpgsql VOLATILE
AS $$
-- The result's column names are also the tables' and the CTEs': in the statement they mean the
-- columns, never the output variables.
#variable_conflict use_column
BEGIN
    -- The one enqueue of both send paths: one message (POST /sms/send, smsctl send: a single
    -- row) or many (POST /sms/send/batch). The rows come in as parallel arrays and are unnested
    -- WITH ORDINALITY so the answer keeps the request's order. Foreign keys between the CTEs'
    -- rows are checked at the end of the statement, so they hold. recipient_limit is the key's
    -- recipient_hourly_limit (NULL: none; `limited` then locks and reads nothing).
    RETURN QUERY
    WITH args AS MATERIALIZED (
        -- The parameters the plan's estimates would depend on, behind a fence, so that every
        -- plan of this statement is the same whatever their values. PL/pgSQL keeps the one
        -- generic plan only while the custom plans it tries first cost no less: with the values
        -- in sight, one row's arrays and a NULL recipient_limit (which prunes `limited`) made
        -- every custom plan cheaper, so each execution was planned anew (measured, when this
        -- was a prepared statement: about twice the statement's server CPU).
        SELECT p_from_numbers AS from_numbers, p_to_numbers AS to_numbers, p_bodies AS bodies,
               p_providers AS providers, p_segments AS segments, p_encodings AS encodings,
               p_idempotency_keys AS idempotency_keys, p_request_hashes AS request_hashes,
               p_priorities AS priorities, p_send_ats AS send_ats, p_expires_ats AS expires_ats,
               p_api_key_id AS api_key_id, p_recipient_limit AS recipient_limit
    ),
    input AS (
        -- Materialized once (it is read several times and calls a volatile function): each
        -- message's id is made here, so the final SELECT can join the inserted rows back to
        -- their position.
        SELECT gen_random_uuid() AS id, t.*
        FROM args,
             unnest(args.from_numbers, args.to_numbers, args.bodies, args.providers,
                    args.segments, args.encodings, args.idempotency_keys, args.request_hashes,
                    args.priorities, args.send_ats, args.expires_ats)
             WITH ORDINALITY AS t(from_number, to_number, body, provider, segments, encoding,
                                  idempotency_key, request_hash, priority, send_at, expires_at,
                                  ord)
    ),
    blocked AS (
        -- Rows whose recipient opted out of their sender, or of every sender (sms_suppressions,
        -- read through the leading phone_number of sms_suppressions_once). One of them stops the
        -- whole statement: every INSERT below writes only when there is none, and the answer is
        -- then the blocked rows' ordinals instead of messages (all or nothing, as a batch is). A
        -- suppression committed after this statement's snapshot is the claim's to catch
        -- (outbox_claim_due).
        SELECT i.ord
        FROM input i
        WHERE EXISTS (SELECT 1 FROM sms_suppressions s
                      WHERE s.phone_number = i.to_number
                        AND (s.sender_number = i.from_number OR s.sender_number IS NULL))
    ),
    per_recipient AS (
        -- Each recipient of the request once: how many of its rows go to it, and the first
        -- one's ordinal.
        SELECT i.to_number, count(*)::int AS n, min(i.ord) AS ord
        FROM input i
        GROUP BY i.to_number
    ),
    limited AS MATERIALIZED (
        -- recipient_hourly_limit: the recipients this request would take past the limit, each
        -- with the ordinal of its first row: this key's outbound messages to them created in
        -- the trailing hour (transaction clock, as created_at), plus the request's own. One such
        -- recipient stops the whole statement, as `blocked` does, and the answer is then these
        -- ordinals (api/limits.py asks messages_recipient_hour for Retry-After).
        -- sms_recipients_over_limit (migration 0012) takes the (key, recipient) locks and then
        -- counts in a snapshot of its own, taken after them, so it sees every message of
        -- whoever held them before; they are held to the commit. Called once (a function scan);
        -- a NULL limit locks and counts nothing.
        SELECT p.to_number, p.ord
        FROM args
        CROSS JOIN LATERAL sms_recipients_over_limit(
            args.api_key_id,
            (SELECT array_agg(r.to_number ORDER BY r.to_number) FROM per_recipient r),
            (SELECT array_agg(r.n ORDER BY r.to_number) FROM per_recipient r),
            args.recipient_limit) AS o
        JOIN per_recipient p ON p.to_number = o.to_number
    ),
    conversation AS (
        -- Find or create each (from, to) thread once. DO UPDATE (not DO NOTHING) returns the row
        -- in both cases and moves last_message_at; a second first message of the same new pair
        -- waits on the unique index for the first one's commit and then lands on the same row.
        -- One multi-row ON CONFLICT DO UPDATE may not touch a row twice, hence DISTINCT. Sorted,
        -- so two concurrent batches lock shared threads in the same order and cannot deadlock
        -- on them.
        INSERT INTO sms_conversations AS c (from_number, to_number)
        SELECT DISTINCT i.from_number, i.to_number
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM blocked) AND NOT EXISTS (SELECT 1 FROM limited)
        ORDER BY i.from_number, i.to_number
        ON CONFLICT (from_number, to_number) DO UPDATE
        SET last_message_at = greatest(c.last_message_at, now())
        RETURNING c.id, c.from_number, c.to_number
    ),
    message AS (
        -- UNIQUE (api_key_id, idempotency_key) makes the second of two concurrent requests with
        -- one key fail here with a unique violation, which the caller turns into a replay or a
        -- 409. A batch refuses the header (api/batch.py), so its rows carry NULL keys and
        -- hashes.
        INSERT INTO sms_messages AS m (id, conversation_id, from_number, to_number, body,
                                       provider, segments, encoding, api_key_id,
                                       idempotency_key, request_hash, request_id, priority,
                                       send_at, expires_at)
        SELECT i.id, c.id, i.from_number, i.to_number, i.body, i.provider, i.segments,
               i.encoding, p_api_key_id, i.idempotency_key, i.request_hash, p_request_id,
               i.priority, i.send_at, i.expires_at
        FROM input i
        JOIN conversation c ON c.from_number = i.from_number AND c.to_number = i.to_number
        WHERE NOT EXISTS (SELECT 1 FROM blocked) AND NOT EXISTS (SELECT 1 FROM limited)
        RETURNING m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.segments,
                  m.encoding, m.created_at, m.request_hash, m.priority, m.send_at,
                  m.expires_at
    ),
    outbox AS (
        -- Due at send_at, or at once; the claim reads everything it needs here without touching
        -- sms_messages (sms_outbox_pace_idx: sender, priority, next_attempt_at). The priority
        -- number is the word's place in ('high', 'normal', 'low'), as
        -- shared.validation.PRIORITIES orders them and messages_requeue maps them too.
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
    -- Either the messages created, or the refusals: (opted_out) the blocked ordinals and
    -- (over_limit) the first ordinal of each recipient over recipient_hourly_limit.
    SELECT m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.segments,
           m.encoding, m.created_at, m.request_hash, m.priority, m.send_at, m.expires_at, i.ord,
           false AS opted_out, false AS over_limit
    FROM message m
    JOIN input i ON i.id = m.id
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, b.ord, true,
           false
    FROM blocked b
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, o.ord, false,
           true
    FROM limited o
    ORDER BY ord;
END
$$;
COMMENT ON FUNCTION sms_messages_enqueue(text[], text[], text[], text[], int[], text[], text[], text[], text[], timestamptz[], timestamptz[], bigint, text, int) IS 'The enqueue of both send paths (sql/queries/messages.sql messages_enqueue calls it): threads, messages, outbox rows and created events of parallel-array rows in one statement, or the ordinals refused (opted_out, over_limit) and nothing written. A function so that its plan is kept per server connection behind a transaction-pooling PgBouncer.';
