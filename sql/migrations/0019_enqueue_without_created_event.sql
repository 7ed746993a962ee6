-- 0019: the enqueue writes no 'created' event (issue 15, fewer writes per message). Every message
-- had one, written in the same statement as the message, and it said nothing that the message row
-- does not: the time is sms_messages.created_at, the status `pending` and the provider the row's.
-- It cost a row and two index entries (key, message) in the day's events partition, and its
-- existence check (the statement trigger of 0010, two queries) on every enqueue. pgbench of 0017's
-- statement with and without it, side by side on one server: 1,162/s against 1,855/s (README,
-- Performance). The message's timeline (events_timeline: GET /sms/messages/{id}, smsctl show,
-- /ops/messages) still begins with `created`, made from the row (event id 0); messages enqueued
-- before this migration keep their event row, and the timeline does not repeat it.
--
-- The statement is 0017's without the `created` CTE; nothing else changes, so a process of the
-- previous release calls the same signature while a deploy rolls.
CREATE OR REPLACE FUNCTION sms_messages_enqueue_rows(
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
COMMENT ON FUNCTION sms_messages_enqueue_rows(text[], text[], text[], text[], int[], text[], text[], text[], text[], timestamptz[], timestamptz[], bigint[], text[], int[], boolean) IS 'The enqueue of every send path (sql/queries/messages.sql messages_enqueue calls it): threads, messages and outbox rows of parallel-array rows in one statement, and the ordinals refused (opted_out, over_limit). p_each_alone: a refusal is its row''s only (a group commit); else one refusal writes nothing (a batch).';

