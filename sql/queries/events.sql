-- sms_message_events: the append-only history (timeline, callbacks, sweeps, doubles, retention).

-- name: events_timeline
-- A message's history in insertion order, served by sms_message_events_message_idx (message_id, id)
-- of each day partition since the message was created: its events never precede its creation, so
-- the bound on occurred_at prunes the older days (0010) instead of probing every one of them.
-- An outbound message's history begins with `created`, made from its row (id 0, before every
-- event's id): since migration 0019 the enqueue writes no event for it. A message enqueued before
-- then has its own `created` row, and gets no second one.
WITH m AS MATERIALIZED (
    SELECT m.id, m.created_at, m.provider, m.direction
    FROM sms_messages m
    WHERE m.id = %(message_id)s
),
events AS MATERIALIZED (
    SELECT e.id, e.event_type, e.attempt, e.from_status, e.to_status, e.provider, e.provider_sid,
           e.error_code, e.error_category, e.detail, e.occurred_at
    FROM sms_message_events e
    WHERE e.message_id = %(message_id)s
      AND e.occurred_at >= (SELECT m.created_at FROM m)
)
SELECT 0::bigint AS id, 'created' AS event_type, NULL::int AS attempt, NULL::text AS from_status,
       'pending' AS to_status, m.provider, NULL::text AS provider_sid, NULL::text AS error_code,
       NULL::text AS error_category, NULL::jsonb AS detail, m.created_at AS occurred_at
FROM m
WHERE m.direction = 'outbound'
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_type = 'created')
UNION ALL
SELECT * FROM events
ORDER BY id;

-- name: events_prune_orphans
-- Callbacks for messages we never knew (message_id NULL) older than older_than, one batch.
DELETE FROM sms_message_events
WHERE id IN (SELECT id FROM sms_message_events
             WHERE message_id IS NULL AND occurred_at < now() - %(older_than)s::interval
             ORDER BY occurred_at
             LIMIT %(batch)s)
RETURNING id;

-- name: events_callback_lag
-- Seconds from the provider accepting the message to now (a status callback arriving), for the
-- sms_callback_lag_seconds histogram. Primary key look-up; NULL before acceptance is recorded.
SELECT extract(epoch FROM now() - submitted_at)::float8 AS lag
FROM sms_messages
WHERE id = %(id)s;

-- name: events_record_callback
-- Every callback is kept raw; an exact duplicate (same message, sid, status and error code) is a
-- no-op and RETURNING tells the caller whether this one was new. The sid is part of the key: a
-- stray copy's `delivered` never hides the recorded sid's own. The history is partitioned by
-- occurred_at (0010), so no unique index can catch a duplicate that arrives later: the insert
-- looks first (partial index sms_message_events_callback_once), which is race-free because every
-- caller holds the message's row lock (messages_lock_by_id / _by_sid). A message's events never
-- precede its creation, so the look reads only the partitions since then. Callbacks for unknown
-- messages (message_id NULL) are always kept.
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
SELECT %(message_id)s::uuid, 'callback', %(raw_status)s::text, %(provider)s::text, %(sid)s::text,
       %(error_code)s::text, %(detail)s::jsonb
WHERE %(message_id)s::uuid IS NULL
   OR NOT EXISTS (
       SELECT 1
       FROM sms_message_events e
       WHERE e.event_type = 'callback'
         AND e.message_id = %(message_id)s::uuid
         AND coalesce(e.provider_sid, '') = coalesce(%(sid)s::text, '')
         AND e.to_status = %(raw_status)s::text
         AND coalesce(e.error_code, '') = coalesce(%(error_code)s::text, '')
         AND e.occurred_at >= (SELECT m.created_at FROM sms_messages m
                               WHERE m.id = %(message_id)s::uuid))
RETURNING id;

-- name: events_record_duplicate_send
-- A provider message that carries our message id but is not the one we recorded: a double send,
-- detected. Once per (message, stray sid): the insert looks first (sms_message_events_duplicate_once),
-- under the message's row lock like events_record_callback; RETURNING says whether this is the
-- first sight of that stray copy.
INSERT INTO sms_message_events
    (message_id, event_type, provider, provider_sid, detail)
SELECT %(message_id)s::uuid, 'duplicate_send_detected', %(provider)s::text, %(sid)s::text,
       jsonb_build_object('recorded_sid', %(recorded_sid)s::text, 'raw_status', %(raw_status)s::text)
WHERE NOT EXISTS (
    SELECT 1
    FROM sms_message_events e
    WHERE e.event_type = 'duplicate_send_detected'
      AND e.provider = %(provider)s::text
      AND e.provider_sid = %(sid)s::text
      AND e.message_id = %(message_id)s::uuid
      AND e.occurred_at >= (SELECT m.created_at FROM sms_messages m
                            WHERE m.id = %(message_id)s::uuid))
RETURNING id;

-- name: events_record_sweep
-- What the sweeper read from the provider, kept as a 'sweep' event (not deduplicated: each check
-- is a fact of its own).
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
VALUES
    (%(message_id)s, 'sweep', %(raw_status)s, %(provider)s, %(sid)s, %(error_code)s, %(detail)s)
RETURNING id;

-- name: events_record_reveal
-- The ops console showed an operator a message's full recipient: the reveal is itself part of the
-- message's history, naming the operator key. Primary key look-up of the message; no row back for
-- an unknown id.
INSERT INTO sms_message_events (message_id, event_type, provider, detail)
SELECT m.id, 'recipient_revealed', m.provider,
       jsonb_build_object('by', %(actor)s::text, 'api_key_id', %(api_key_id)s::bigint)
FROM sms_messages m
WHERE m.id = %(message_id)s
RETURNING id;

-- name: events_provider_outcomes_1h
-- The ops console's last-hour outcome table is the DBA view itself, so both show one set of
-- numbers (the view reads sms_message_events_outcome_idx).
SELECT provider, attempts, sent, reconciled, retryable, permanent, ambiguous, config,
       success_ratio
FROM sms_provider_outcomes_1h
ORDER BY provider;

-- name: events_outcomes_by_bucket
-- Attempt outcomes per provider per time bucket since `origin`, for the console's charts: the
-- classes and filters of sms_provider_outcomes_1h, binned by `bucket` from `origin` (the first
-- bucket's start, so every bucket is whole and aligned with the chart). Reads
-- sms_message_events_outcome_idx (partial on the two event types, by occurred_at).
SELECT e.provider,
       date_bin(%(bucket)s::interval, e.occurred_at, %(origin)s::timestamptz) AS bucket,
       count(*)                                                            AS attempts,
       count(*) FILTER (WHERE e.error_category = 'sent' AND e.event_type = 'attempt_result')
                                                                           AS sent,
       count(*) FILTER (WHERE e.event_type = 'reconciled')                 AS reconciled,
       count(*) FILTER (WHERE e.error_category = 'retryable')              AS retryable,
       count(*) FILTER (WHERE e.error_category = 'permanent')              AS permanent,
       count(*) FILTER (WHERE e.error_category = 'ambiguous')              AS ambiguous,
       count(*) FILTER (WHERE e.error_category = 'config')                 AS config
FROM sms_message_events e
WHERE e.event_type IN ('attempt_result', 'reconciled')
  AND e.occurred_at >= %(origin)s::timestamptz
GROUP BY e.provider, bucket
ORDER BY e.provider, bucket;

-- name: events_make_partitions
-- Retention keeps the next days of the history ready (0010's function; rows that reached the
-- DEFAULT partition meanwhile move into their day). UTC days, like the partitions.
SELECT sms_message_events_make_partitions((now() AT TIME ZONE 'UTC')::date,
                                          (now() AT TIME ZONE 'UTC')::date + %(days_ahead)s::int)
       AS made;

-- name: events_partitions_past
-- The day partitions whose whole day (UTC) ended before now() - older_than, oldest first: what
-- retention may drop (read from the catalog; the name carries the day).
SELECT p.partition_name
FROM (SELECT c.relname::text AS partition_name,
             -- Only names of the pattern are read as a day (not sms_message_events_default).
             CASE WHEN c.relname ~ '^sms_message_events_p[0-9]{8}$'
                  THEN to_date(substr(c.relname, 21), 'YYYYMMDD') END AS day
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'sms_message_events'::regclass) AS p
WHERE (p.day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - %(older_than)s::interval
ORDER BY p.day;

-- name: events_drop_partition
-- One day of history dropped, or kept with the reason (0010's sms_message_events_drop_partition
-- checks that no event of a message that stays is in it).
SELECT sms_message_events_drop_partition(%(partition_name)s::text, %(older_than)s::interval)
       AS outcome;
