-- 0010: history that grows for a year (issue 17). sms_message_events becomes a table partitioned
-- by day on occurred_at, so retention drops a whole day of events (DROP TABLE of a partition: no
-- dead rows, no vacuum of the largest table, almost no WAL) instead of deleting rows one by one.
--
-- Why daily: `smsctl prune --older-than 90d` runs once a day and its cutoff moves a day at a time;
-- with daily partitions each run drops the day that fell out. A coarser partition (week, month)
-- is only droppable once its whole range is past the cutoff, and by then the daily DELETE of its
-- messages would already have removed its events row by row.
--
-- What a partition key forces (PostgreSQL's rules, any version):
-- * Unique indexes must contain occurred_at. Callbacks and detected double sends were made
--   unique by sms_message_events_callback_once and _duplicate_once; a duplicate arrives later, at
--   another occurred_at, so a unique index with occurred_at in it would no longer catch it. Both
--   stay as plain partial indexes under their names and the queries that record those events
--   (events_record_callback, events_record_duplicate_send) look before they insert, under the
--   message's row lock that every status path takes first (messages_lock_by_id / _by_sid), so
--   two copies of one callback still record once.
-- * The primary key becomes (id, occurred_at); id stays the identity every reader orders by.
-- * A declarative foreign key from a partitioned table makes every deleted message probe every
--   partition's index, one message at a time (measured on PostgreSQL 15: 100,000 deletes took
--   12 s with 95 daily partitions, 0.8 s without). The same contract is kept by two triggers
--   instead: an insert names an existing message (foreign_key_violation otherwise), and deleting
--   messages deletes their events, one set-based statement per DELETE statement.
--
-- Inserts never fail for want of a partition: a DEFAULT partition takes any row outside the
-- days made so far, and sms_message_events_make_partitions moves such rows into their day when
-- it makes it. This migration makes the days that hold rows and the next 14; `smsctl prune`
-- (the daily retention unit) keeps 14 days ready.
--
-- Converting an existing table copies every row under this migration's lock (the API and the
-- dispatchers wait): about a minute per few million events; plan a quiet moment for a big one.

-- The view and the trigger on the old table go; both are made again on the new one below.
DROP VIEW sms_provider_outcomes_1h;
DROP TRIGGER sms_message_events_webhooks ON sms_message_events;

ALTER TABLE sms_message_events RENAME TO sms_message_events_unpartitioned;
ALTER TABLE sms_message_events_unpartitioned
    RENAME CONSTRAINT sms_message_events_pkey TO sms_message_events_unpartitioned_pkey;
ALTER SEQUENCE sms_message_events_id_seq RENAME TO sms_message_events_unpartitioned_id_seq;
DROP INDEX sms_message_events_message_idx, sms_message_events_callback_once,
    sms_message_events_duplicate_once, sms_message_events_orphan_idx,
    sms_message_events_outcome_idx;

CREATE TABLE sms_message_events (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    message_id      uuid,
    event_type      text NOT NULL CONSTRAINT sms_message_events_event_type_check CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep', 'reconcile_miss',
         'duplicate_send_detected', 'held', 'expired', 'received', 'suppressed')),
    attempt         integer,
    from_status     text,
    to_status       text,
    provider        text,
    provider_sid    text,
    error_code      text,
    error_category  text,
    detail          jsonb,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    -- A callback for an unknown message is kept with no message_id; everything else belongs to one.
    CONSTRAINT sms_message_events_check CHECK (message_id IS NOT NULL OR event_type = 'callback'),
    CONSTRAINT sms_message_events_pkey PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE sms_message_events_default PARTITION OF sms_message_events DEFAULT;

-- One day, [day 00:00 UTC, next day 00:00 UTC), named sms_message_events_pYYYYMMDD. Rows of that
-- day already in the DEFAULT partition move into it (the day is built beside the table, filled,
-- then attached), so making a day late never fails.
CREATE FUNCTION sms_message_events_make_partitions(first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    day  date;
    part text;
    lo   timestamptz;
    hi   timestamptz;
    made integer := 0;
BEGIN
    -- Two makers at once (two prunes) take turns instead of both creating the same day.
    PERFORM pg_advisory_xact_lock(hashtext('sms_message_events_make_partitions'));
    -- Making a day locks the table briefly; behind a long reader it gives up after 5 s (the day
    -- is made by the next run; its rows wait in the DEFAULT partition) rather than queueing the
    -- inserts of the API and the dispatchers behind it.
    PERFORM set_config('lock_timeout', '5s', true);
    FOR day IN SELECT d::date FROM generate_series(first_day, last_day, interval '1 day') AS d LOOP
        part := 'sms_message_events_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        lo := day::timestamp AT TIME ZONE 'UTC';
        hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
        BEGIN
            IF EXISTS (SELECT 1 FROM sms_message_events_default
                       WHERE occurred_at >= lo AND occurred_at < hi) THEN
                EXECUTE format('CREATE TABLE %I (LIKE sms_message_events'
                               ' INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format('WITH moved AS (DELETE FROM sms_message_events_default'
                               ' WHERE occurred_at >= %L AND occurred_at < %L RETURNING *)'
                               ' INSERT INTO %I SELECT * FROM moved', lo, hi, part);
                EXECUTE format('ALTER TABLE sms_message_events ATTACH PARTITION %I'
                               ' FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF sms_message_events'
                               ' FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            END IF;
            made := made + 1;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'sms_message_events: day % not made (table busy); the next run makes it', day;
        END;
    END LOOP;
    RETURN made;
END
$$;
COMMENT ON FUNCTION sms_message_events_make_partitions(date, date) IS 'Makes the daily partitions of sms_message_events from first_day to last_day (UTC days) that do not exist yet, moving rows of those days out of the DEFAULT partition; returns how many it made. smsctl prune calls it for the next 14 days.';

-- Retention by partition, one day at a time (smsctl prune calls it for each day partition past the
-- cutoff, each in its own transaction, so the DROP's lock on the table lasts an instant). A day is
-- dropped when its whole day is older than now() - older_than, unless one of its events belongs
-- to a message that stays (not final, final since the cutoff, or with outbox work of its own or
-- of its alert: the messages messages_prune keeps). Such a day is kept and its other events still
-- go with their messages (sms_messages_delete_events); a later run drops it once those messages
-- are gone. Events happen at or after their message's creation, so only messages created before
-- the day's end are looked at (sms_messages_created_idx). A day whose table is busy (a long
-- reader holds it) is skipped after lock_timeout rather than holding up the inserts queued
-- behind the DROP. Anything but a past day partition of sms_message_events is refused.
CREATE FUNCTION sms_message_events_drop_partition(part text, older_than interval)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    cutoff timestamptz := now() - older_than;
    day    date;
    lo     timestamptz;
    hi     timestamptz;
BEGIN
    IF part !~ '^sms_message_events_p[0-9]{8}$' OR NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'sms_message_events'::regclass AND c.relname = part) THEN
        RETURN 'kept: not a day partition of sms_message_events';
    END IF;
    day := to_date(substr(part, 21), 'YYYYMMDD');
    lo := day::timestamp AT TIME ZONE 'UTC';
    hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
    IF hi > cutoff THEN
        RETURN 'kept: not past the cutoff';
    END IF;
    IF EXISTS (
        SELECT 1
        FROM sms_messages m
        WHERE m.created_at < hi
          AND (m.final_at IS NULL OR m.final_at >= cutoff
               OR EXISTS (SELECT 1 FROM sms_outbox o WHERE o.message_id = m.id)
               OR EXISTS (SELECT 1 FROM sms_alerts a JOIN sms_outbox o ON o.alert_id = a.id
                          WHERE a.message_id = m.id))
          AND EXISTS (SELECT 1 FROM sms_message_events e
                      WHERE e.message_id = m.id AND e.occurred_at >= lo AND e.occurred_at < hi))
    THEN
        RETURN 'kept: events of messages that stay';
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    BEGIN
        EXECUTE format('DROP TABLE %I', part);
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'kept: busy';
    END;
    RETURN 'dropped';
END
$$;
COMMENT ON FUNCTION sms_message_events_drop_partition(text, interval) IS 'Retention of sms_message_events (smsctl prune): drops the daily partition part if its day is older than now() - older_than and its events all belong to messages that are gone or due for deletion; returns dropped, or kept: and why.';
REVOKE EXECUTE ON FUNCTION sms_message_events_make_partitions(date, date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION sms_message_events_drop_partition(text, interval) FROM PUBLIC;

-- The days that hold rows, and today (UTC) to 14 days ahead, then every row, ids kept.
SELECT sms_message_events_make_partitions(d, d)
FROM (SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date AS d
      FROM sms_message_events_unpartitioned) AS days
ORDER BY d;
SELECT sms_message_events_make_partitions((now() AT TIME ZONE 'UTC')::date,
                                          (now() AT TIME ZONE 'UTC')::date + 14);
INSERT INTO sms_message_events
    (id, message_id, event_type, attempt, from_status, to_status, provider, provider_sid,
     error_code, error_category, detail, occurred_at)
OVERRIDING SYSTEM VALUE
SELECT id, message_id, event_type, attempt, from_status, to_status, provider, provider_sid,
       error_code, error_category, detail, occurred_at
FROM sms_message_events_unpartitioned;
SELECT setval(pg_get_serial_sequence('sms_message_events', 'id'),
              greatest((SELECT max(id) FROM sms_message_events_unpartitioned), 0) + 1, false);
DROP TABLE sms_message_events_unpartitioned;

-- The indexes of 0001, 0003 and 0004, on every partition. The two *_once indexes are no longer
-- unique (see the top); they serve the look-before-insert of their queries.
CREATE INDEX sms_message_events_message_idx ON sms_message_events (message_id, id);
CREATE INDEX sms_message_events_callback_once ON sms_message_events
    (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, ''))
    WHERE event_type = 'callback' AND message_id IS NOT NULL;
CREATE INDEX sms_message_events_duplicate_once ON sms_message_events
    (provider, provider_sid, message_id)
    WHERE event_type = 'duplicate_send_detected';
CREATE INDEX sms_message_events_orphan_idx ON sms_message_events (occurred_at)
    WHERE message_id IS NULL;
CREATE INDEX sms_message_events_outcome_idx ON sms_message_events (occurred_at)
    WHERE event_type IN ('attempt_result', 'reconciled');

-- The foreign key to sms_messages, as triggers (see the top). Both run as the owner, as
-- PostgreSQL's own foreign-key triggers do, so the roles that write need no extra grant.
-- An insert must name an existing message; the rows are locked FOR KEY SHARE (as a foreign key
-- check does) so a concurrent delete of the message waits for this transaction.
CREATE FUNCTION sms_message_events_message_exists() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM 1 FROM sms_messages m
    WHERE m.id = ANY (ARRAY(SELECT n.message_id FROM new_events n WHERE n.message_id IS NOT NULL))
    ORDER BY m.id
    FOR KEY SHARE;
    SELECT n.message_id INTO missing
    FROM new_events n
    WHERE n.message_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sms_messages m WHERE m.id = n.message_id)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "sms_message_events" violates the reference to sms_messages'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (message_id)=(%s) is not present in table "sms_messages".', missing),
                  TABLE = 'sms_message_events', COLUMN = 'message_id';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sms_message_events_message_exists() IS 'Foreign key of sms_message_events.message_id, checked once per INSERT statement: every non-null message_id names an sms_messages row.';
CREATE TRIGGER sms_message_events_message_exists
    AFTER INSERT ON sms_message_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION sms_message_events_message_exists();

-- ON DELETE CASCADE: one DELETE per statement that deleted messages; = ANY(array) reads each
-- partition's sms_message_events_message_idx, whatever the planner thinks of the batch's size.
CREATE FUNCTION sms_messages_delete_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM sms_message_events e
    WHERE e.message_id = ANY (ARRAY(SELECT g.id FROM gone g));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sms_messages_delete_events() IS 'ON DELETE CASCADE of sms_message_events.message_id: deletes the events of the messages one statement deleted.';
CREATE TRIGGER sms_messages_delete_events
    AFTER DELETE ON sms_messages
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION sms_messages_delete_events();

-- The webhook fan-out of 0008, unchanged (a statement trigger on a partitioned table sees the
-- rows of every partition in its transition table).
CREATE TRIGGER sms_message_events_webhooks
    AFTER INSERT ON sms_message_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION sms_webhooks_from_message_events();

-- Retention deletes messages for a year of history: each deleted message makes PostgreSQL's own
-- foreign-key triggers look for rows that point at it. sms_alerts and sms_suppressions had only
-- partial indexes on those columns (which that look cannot use), so every deleted message read
-- both tables whole; these let it probe instead (and serve messages_prune's alert check).
CREATE INDEX sms_alerts_message_idx ON sms_alerts (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX sms_suppressions_source_message_idx ON sms_suppressions (source_message_id)
    WHERE source_message_id IS NOT NULL;

COMMENT ON TABLE sms_message_events IS 'Append-only history of each message: created, attempts, callbacks (raw), transitions, alerts. Partitioned by day on occurred_at (sms_message_events_pYYYYMMDD, UTC; sms_message_events_default takes rows of days not made yet); smsctl prune drops whole days.';
COMMENT ON COLUMN sms_message_events.id IS 'Insertion order (identity); with occurred_at the primary key, as a partitioned table''s key must hold the partition key.';
COMMENT ON COLUMN sms_message_events.message_id IS 'The message (sms_messages.id; checked by the trigger sms_message_events_message_exists, and deleted with it by sms_messages_delete_events); null only for a callback of an unknown message.';
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, reconcile_miss, duplicate_send_detected, sweep, held (quiet hours; detail.release_at), expired, received (inbound), suppressed (canceled at claim: the recipient opted out).';
COMMENT ON COLUMN sms_message_events.attempt IS 'Attempt number for attempt_started / attempt_result.';
COMMENT ON COLUMN sms_message_events.from_status IS 'Status before a transition.';
COMMENT ON COLUMN sms_message_events.to_status IS 'Status after a transition, or the status a callback reported.';
COMMENT ON COLUMN sms_message_events.error_category IS 'Outcome class of an attempt: sent, retryable, permanent, ambiguous, config.';
COMMENT ON COLUMN sms_message_events.detail IS 'Raw callback payload or structured detail (never the body).';
COMMENT ON COLUMN sms_message_events.occurred_at IS 'When it happened (database clock); the partition key: the day partition it lives in, and what retention drops by.';

-- 0003's view, the same, on the new table.
CREATE VIEW sms_provider_outcomes_1h AS
-- attempt_result events carry the outcome class in error_category (sent, retryable, permanent,
-- ambiguous, config); reconciled events are ambiguous attempts the provider turned out to have
-- accepted.
SELECT e.provider,
       count(*)                                                      AS attempts,
       count(*) FILTER (WHERE e.error_category = 'sent' AND e.event_type = 'attempt_result')
                                                                     AS sent,
       count(*) FILTER (WHERE e.event_type = 'reconciled')           AS reconciled,
       count(*) FILTER (WHERE e.error_category = 'retryable')        AS retryable,
       count(*) FILTER (WHERE e.error_category = 'permanent')        AS permanent,
       count(*) FILTER (WHERE e.error_category = 'ambiguous')        AS ambiguous,
       count(*) FILTER (WHERE e.error_category = 'config')           AS config,
       round(count(*) FILTER (WHERE e.error_category = 'sent')::numeric / count(*), 4)
                                                                     AS success_ratio
FROM sms_message_events e
WHERE e.event_type IN ('attempt_result', 'reconciled')
  AND e.occurred_at > now() - interval '1 hour'
GROUP BY e.provider;
COMMENT ON VIEW sms_provider_outcomes_1h IS 'Per provider, the outcomes of send attempts recorded in the last hour (attempt_result and reconciled events): sent, retryable, permanent, ambiguous, config, and the share that was sent.';
