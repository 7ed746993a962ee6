-- 0017: one enqueue call for a whole group commit. The group of POST /sms/send (api/group_commit.py)
-- wrote N requests' messages with N calls of sms_messages_enqueue in one transaction, because the
-- function took one api key, one request id and one recipient limit for all its rows, and its
-- refusals were all or nothing. Each call is a statement of its own (executor start, snapshot,
-- the CTEs' set-up): server CPU per row measured about 0.2 ms for one 16-row call against 0.64 to
-- 0.97 ms for 16 one-row calls in one transaction.
--
-- sms_messages_enqueue_rows is the enqueue statement of 0014 with the request's values per row
-- (api key, request id, recipient limit) and a mode: all or nothing (a batch: one refused row
-- refuses every row, as before), or each row alone (a group commit: a row's refusal is its own
-- and the other rows are written, as if each had been written by its own statement, one after
-- the other, in ordinal order). sms_messages_enqueue keeps its signature as a thin wrapper, so a
-- process of the previous release still enqueues while a deploy rolls; the statement itself is
-- written once, here.
--
-- The recipient limit needs, per (key, recipient), the key's messages to it in the trailing hour:
-- sms_recipients_recent takes the (key, recipient) locks and then counts, for the pairs of any
-- number of keys, and the statement compares. It replaces sms_recipients_over_limit (0012), which
-- answered one key's recipients already compared and had no other caller.
DROP FUNCTION sms_recipients_over_limit(bigint, text[], int[], int);

CREATE FUNCTION sms_recipients_recent(p_api_key_ids bigint[], p_to_numbers text[])
RETURNS TABLE (api_key_id bigint, to_number text, recent bigint)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
BEGIN
    -- A VOLATILE function takes a fresh snapshot for each statement it runs (READ COMMITTED), so
    -- each count below sees every message of whoever held the pair's lock before; the locks are
    -- held until the caller's transaction ends. The lock key: a hash of key id and recipient.
    IF coalesce(cardinality(p_to_numbers), 0) = 0 THEN
        RETURN;  -- no limited row: nothing locked, nothing counted
    END IF;
    IF cardinality(p_to_numbers) = 1 THEN
        -- One pair (every limited POST /sms/send written alone): a lock and a count, each a
        -- plain statement, which PL/pgSQL runs about four times cheaper than the general case
        -- below (measured in 0012: ~25 us against ~95 us a call).
        PERFORM pg_advisory_xact_lock(
            hashtextextended(p_api_key_ids[1]::text || ':' || p_to_numbers[1], 0));
        -- This statement's snapshot is taken now, after the lock. sms_messages_to_idx
        -- (to_number, created_at) walks the recipient's hour, and the key and direction filter
        -- those few rows. OFFSET 0 keeps them out of the scan: offered api_key_id, the planner
        -- took sms_messages_key_created_idx whenever the statistics made one key look rare, and
        -- walked every message of the key's hour on each request.
        api_key_id := p_api_key_ids[1];
        to_number := p_to_numbers[1];
        SELECT count(*) INTO recent
        FROM (SELECT m.api_key_id, m.direction
              FROM sms_messages m
              WHERE m.to_number = p_to_numbers[1]
                AND m.created_at > now() - interval '1 hour'
              OFFSET 0) AS m
        WHERE m.api_key_id = p_api_key_ids[1] AND m.direction = 'outbound';
        RETURN NEXT;
        RETURN;
    END IF;
    -- Sorted, so two transactions that share pairs (of one key or of several) take the locks in
    -- one order and never deadlock.
    PERFORM pg_advisory_xact_lock(k)
    FROM (SELECT DISTINCT hashtextextended(a.key_id::text || ':' || a.t, 0) AS k
          FROM unnest(p_api_key_ids, p_to_numbers) AS a(key_id, t)) AS keys
    ORDER BY k;
    -- As above, for each pair, in a snapshot taken after the locks.
    RETURN QUERY
    SELECT a.key_id, a.t, r.recent
    FROM unnest(p_api_key_ids, p_to_numbers) AS a(key_id, t)
    CROSS JOIN LATERAL (
        SELECT count(*) AS recent
        FROM (SELECT m.api_key_id, m.direction
              FROM sms_messages m
              WHERE m.to_number = a.t
                AND m.created_at > now() - interval '1 hour'
              OFFSET 0) AS m
        WHERE m.api_key_id = a.key_id AND m.direction = 'outbound'
    ) AS r;
END
$$;
COMMENT ON FUNCTION sms_recipients_recent(bigint[], text[]) IS 'recipient_hourly_limit: locks each (key, recipient) pair for the rest of the transaction, then answers how many messages the key sent each recipient in the trailing hour.';

-- As 0014's statement, with the per-request values per row; 0014 says why it is a function and
-- why every parameter sits behind the `args` fence.
CREATE FUNCTION sms_messages_enqueue_rows(
    p_from_numbers text[], p_to_numbers text[], p_bodies text[], p_providers text[],
    p_segments int[], p_encodings text[], p_idempotency_keys text[], p_request_hashes text[],
    p_priorities text[], p_send_ats timestamptz[], p_expires_ats timestamptz[],
    p_api_key_ids bigint[], p_request_ids text[], p_recipient_limits int[], p_each_alone boolean)
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
    -- The one enqueue of every send path: one message (POST /sms/send alone, smsctl send), a
    -- batch (POST /sms/send/batch: all or nothing) or a group commit's requests (each alone).
    -- The rows come in as parallel arrays and are unnested WITH ORDINALITY so the answer keeps
    -- the input's order. Foreign keys between the CTEs' rows are checked at the end of the
    -- statement, so they hold. A row's recipient_limit is its key's recipient_hourly_limit
    -- (NULL: none; no row with one: `recent` locks and reads nothing).
    RETURN QUERY
    WITH args AS MATERIALIZED (
        -- The parameters the plan's estimates would depend on, behind a fence, so that every
        -- plan of this statement is the same whatever their values (0014).
        SELECT p_from_numbers AS from_numbers, p_to_numbers AS to_numbers, p_bodies AS bodies,
               p_providers AS providers, p_segments AS segments, p_encodings AS encodings,
               p_idempotency_keys AS idempotency_keys, p_request_hashes AS request_hashes,
               p_priorities AS priorities, p_send_ats AS send_ats, p_expires_ats AS expires_ats,
               p_api_key_ids AS api_key_ids, p_request_ids AS request_ids,
               p_recipient_limits AS recipient_limits, p_each_alone AS each_alone
    ),
    input AS (
        -- Materialized once (it is read several times and calls a volatile function): each
        -- message's id is made here, so the final SELECT can join the inserted rows back to
        -- their position. opted_out: the recipient opted out of the row's sender, or of every
        -- sender (sms_suppressions, read through the leading phone_number of
        -- sms_suppressions_once); a suppression committed after this statement's snapshot is
        -- the claim's to catch (outbox_claim_due).
        SELECT gen_random_uuid() AS id, t.*,
               EXISTS (SELECT 1 FROM sms_suppressions s
                       WHERE s.phone_number = t.to_number
                         AND (s.sender_number = t.from_number OR s.sender_number IS NULL))
                   AS opted_out
        FROM args,
             unnest(args.from_numbers, args.to_numbers, args.bodies, args.providers,
                    args.segments, args.encodings, args.idempotency_keys, args.request_hashes,
                    args.priorities, args.send_ats, args.expires_ats, args.api_key_ids,
                    args.request_ids, args.recipient_limits)
             WITH ORDINALITY AS t(from_number, to_number, body, provider, segments, encoding,
                                  idempotency_key, request_hash, priority, send_at, expires_at,
                                  api_key_id, request_id, recipient_limit, ord)
    ),
    recent AS MATERIALIZED (
        -- recipient_hourly_limit: each (key, recipient) pair of the rows with a limit, once and
        -- sorted, locked and counted by sms_recipients_recent in one call (a function scan),
        -- before anything is written: the locks are held to the commit.
        SELECT r.api_key_id, r.to_number, r.recent
        FROM sms_recipients_recent(
            (SELECT array_agg(p.api_key_id ORDER BY p.api_key_id, p.to_number)
             FROM (SELECT DISTINCT i.api_key_id, i.to_number FROM input i
                   WHERE i.recipient_limit IS NOT NULL AND i.api_key_id IS NOT NULL) AS p),
            (SELECT array_agg(p.to_number ORDER BY p.api_key_id, p.to_number)
             FROM (SELECT DISTINCT i.api_key_id, i.to_number FROM input i
                   WHERE i.recipient_limit IS NOT NULL AND i.api_key_id IS NOT NULL) AS p)) AS r
    ),
    judged AS (
        -- over_limit, per row. Each alone: the row is refused when the key's hour to the
        -- recipient plus the earlier rows to it that are written plus itself pass the limit.
        -- (Rows refused for the limit are the last of their pair, so "written" is "not opted
        -- out": the row's count with every earlier row of its pair not opted out.) All or
        -- nothing (a batch): the pair is over when its hour plus all the batch's rows to it pass
        -- the limit, and its first row is the one refused (api/limits.py names it).
        SELECT i.*,
               coalesce(CASE WHEN args.each_alone
                   THEN r.recent + 1 + count(*) FILTER (WHERE NOT i.opted_out) OVER (
                            PARTITION BY i.api_key_id, i.to_number ORDER BY i.ord
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                        > i.recipient_limit
                   ELSE r.recent + count(*) OVER pair > i.recipient_limit
                        AND i.ord = min(i.ord) OVER pair
               END, false) AS over_limit
        FROM args
        CROSS JOIN input i
        LEFT JOIN recent r ON r.api_key_id = i.api_key_id AND r.to_number = i.to_number
        WINDOW pair AS (PARTITION BY i.api_key_id, i.to_number)
    ),
    writable AS (
        -- The rows to write: each alone, every row not refused; all or nothing, every row when
        -- none is refused (the answer is then the refused ordinals instead of messages).
        SELECT j.*
        FROM args
        CROSS JOIN judged j
        WHERE NOT (j.opted_out OR j.over_limit)
          AND (args.each_alone
               OR NOT EXISTS (SELECT 1 FROM judged x WHERE x.opted_out OR x.over_limit))
    ),
    conversation AS (
        -- Find or create each (from, to) thread once. DO UPDATE (not DO NOTHING) returns the row
        -- in both cases and moves last_message_at; a second first message of the same new pair
        -- waits on the unique index for the first one's commit and then lands on the same row.
        -- One multi-row ON CONFLICT DO UPDATE may not touch a row twice, hence DISTINCT. Sorted,
        -- so two concurrent statements lock shared threads in the same order and cannot
        -- deadlock on them.
        INSERT INTO sms_conversations AS c (from_number, to_number)
        SELECT DISTINCT w.from_number, w.to_number
        FROM writable w
        ORDER BY w.from_number, w.to_number
        ON CONFLICT (from_number, to_number) DO UPDATE
        SET last_message_at = greatest(c.last_message_at, now())
        RETURNING c.id, c.from_number, c.to_number
    ),
    message AS (
        -- UNIQUE (api_key_id, idempotency_key) makes the second of two concurrent requests with
        -- one key fail here with a unique violation, which the caller turns into a replay or a
        -- 409 (a group commit writes one row per key: api/group_commit.py pairs the twins). A
        -- batch refuses the header (api/batch.py), so its rows carry NULL keys and hashes.
        INSERT INTO sms_messages AS m (id, conversation_id, from_number, to_number, body,
                                       provider, segments, encoding, api_key_id,
                                       idempotency_key, request_hash, request_id, priority,
                                       send_at, expires_at)
        SELECT w.id, c.id, w.from_number, w.to_number, w.body, w.provider, w.segments,
               w.encoding, w.api_key_id, w.idempotency_key, w.request_hash, w.request_id,
               w.priority, w.send_at, w.expires_at
        FROM writable w
        JOIN conversation c ON c.from_number = w.from_number AND c.to_number = w.to_number
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
    -- The messages created, and the refused rows: (opted_out) the row's recipient opted out,
    -- (over_limit) as `judged` says; one answer row per refused ordinal, either flag or both.
    SELECT m.id, m.conversation_id, m.from_number, m.to_number, m.provider, m.segments,
           m.encoding, m.created_at, m.request_hash, m.priority, m.send_at, m.expires_at, i.ord,
           false AS opted_out, false AS over_limit
    FROM message m
    JOIN input i ON i.id = m.id
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, j.ord,
           j.opted_out, j.over_limit
    FROM judged j
    WHERE j.opted_out OR j.over_limit
    ORDER BY ord;
END
$$;
COMMENT ON FUNCTION sms_messages_enqueue_rows(text[], text[], text[], text[], int[], text[], text[], text[], text[], timestamptz[], timestamptz[], bigint[], text[], int[], boolean) IS 'The enqueue of every send path (sql/queries/messages.sql messages_enqueue calls it): threads, messages, outbox rows and created events of parallel-array rows in one statement, and the ordinals refused (opted_out, over_limit). p_each_alone: a refusal is its row''s only (a group commit); else one refusal writes nothing (a batch).';

-- 0014's signature (one key, request id and limit for every row; all or nothing), for a process
-- of the previous release during a rolling deploy: the rows' values repeated, nothing else.
CREATE OR REPLACE FUNCTION sms_messages_enqueue(
    p_from_numbers text[], p_to_numbers text[], p_bodies text[], p_providers text[],
    p_segments int[], p_encodings text[], p_idempotency_keys text[], p_request_hashes text[],
    p_priorities text[], p_send_ats timestamptz[], p_expires_ats timestamptz[],
    p_api_key_id bigint, p_request_id text, p_recipient_limit int)
RETURNS TABLE (
    id uuid, conversation_id uuid, from_number text, to_number text, provider text,
    segments int, encoding text, created_at timestamptz, request_hash text, priority text,
    send_at timestamptz, expires_at timestamptz, ord bigint, opted_out boolean,
    over_limit boolean)
LANGUAGE sql VOLATILE
AS $$
SELECT *
FROM sms_messages_enqueue_rows(
    p_from_numbers, p_to_numbers, p_bodies, p_providers, p_segments, p_encodings,
    p_idempotency_keys, p_request_hashes, p_priorities, p_send_ats, p_expires_ats,
    array_fill(p_api_key_id, ARRAY[cardinality(p_to_numbers)]),
    array_fill(p_request_id, ARRAY[cardinality(p_to_numbers)]),
    array_fill(p_recipient_limit, ARRAY[cardinality(p_to_numbers)]), false)
$$;
COMMENT ON FUNCTION sms_messages_enqueue(text[], text[], text[], text[], int[], text[], text[], text[], text[], timestamptz[], timestamptz[], bigint, text, int) IS 'The enqueue of 0014''s callers: sms_messages_enqueue_rows with one api key, request id and recipient limit for every row, all or nothing.';
