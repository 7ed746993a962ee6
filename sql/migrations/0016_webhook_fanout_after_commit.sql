-- 0016: the webhook fan-out of message events leaves the SMS transaction (issue 14). Until now
-- the statement trigger of 0008/0013 (sms_message_events_webhooks) wrote each event's deliveries
-- and their outbox rows inside the transaction that recorded the event: every enqueue, send and
-- status callback paid about 1 ms of PostgreSQL time per enabled endpoint, dead or alive (bench
-- webhooks: end-to-end SMS latency x1.23 with a dead endpoint holding 10,000 deliveries). Now the
-- event only carries the id of the transaction that wrote it (`xact`), and the dispatcher's
-- webhook loop fans the events out after they committed, in batches
-- (webhook_deliveries_fan_out in sql/queries/webhook_deliveries.sql).
--
-- The cursor. Event ids do not say what has committed: transactions commit out of id order, so
-- "every event with an id above the last one read" would skip the event of a transaction that
-- was still open when a later id was read. The cursor is (xact, event id) instead, over events
-- ordered by (xact, id), and a fan-out reads only events with xact below the xmin of its own
-- snapshot: every transaction with an id below xmin has ended, so its events are visible now or
-- never will be (rolled back), and every transaction that has not ended yet, or has not started,
-- has an id at or above xmin. Once the events below xmin are read the cursor moves to (xmin, 0),
-- and nothing below it can appear any more. The event of a transaction still open therefore
-- waits, and so do the later ones: the order is kept, none is skipped and none is read twice.
--
-- The caveat: a long transaction that wrote anything, anywhere in the cluster (another database
-- too: transaction ids are the cluster's), holds xmin back, and every webhook waits for it to
-- end. Read-only transactions (no transaction id) do not. sms_webhook_health's fanout_lag_seconds
-- shows the age of the oldest event not fanned out yet; it grows while such a transaction runs.
--
-- Rows written before this migration have no xact: their deliveries were made by the trigger.

-- Two steps, so no row is rewritten: the column is added empty (old rows NULL), then new rows
-- get the id of the top-level transaction that inserts them. On the partitioned table both
-- reach every partition, the DEFAULT one included, and the days made later (LIKE ... INCLUDING
-- DEFAULTS, or PARTITION OF) copy them.
ALTER TABLE sms_message_events ADD COLUMN xact xid8;
ALTER TABLE sms_message_events ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
COMMENT ON COLUMN sms_message_events.xact IS 'Transaction that wrote the event (pg_current_xact_id()), for the webhook fan-out after commit (sms_webhook_fanout); null for events written before migration 0016, whose webhooks the trigger of 0008 made.';

-- The fan-out reads events past its cursor in (xact, id) order, and only the kinds that become
-- webhooks: status changes of DESIGN section 13, cancels and inbound messages. The others
-- (created, attempt_started, attempt_result, callback, ...) are most of the events and stay out
-- of this index, so an SMS transaction pays one small index entry per webhook-worthy event.
-- The predicate is repeated word for word by webhook_deliveries_fan_out.
CREATE INDEX sms_message_events_fanout_idx ON sms_message_events (xact, id)
    WHERE xact IS NOT NULL AND message_id IS NOT NULL
      AND (event_type = 'received'
           OR (event_type IN ('transition', 'canceled')
               AND to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                 'expired', 'canceled', 'read')));

-- How far the fan-out has read: one row, moved by every fan-out step in the transaction that
-- writes the deliveries, so a crash loses nothing and repeats nothing. A dispatcher that finds
-- it locked (another one is fanning out) leaves the turn to it.
CREATE TABLE sms_webhook_fanout (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    xact        xid8 NOT NULL,
    event_id    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Every event from here on has an xact at or above this: a transaction that was open before this
-- migration and records an event after it has an id at or above the snapshot's xmin.
INSERT INTO sms_webhook_fanout (xact, event_id) VALUES (pg_snapshot_xmin(pg_current_snapshot()), 0);
COMMENT ON TABLE sms_webhook_fanout IS 'The webhook fan-out''s cursor (one row): every sms_message_events row ordered before (xact, event_id) has been turned into deliveries. Moved by webhook_deliveries_fan_out, never past the xmin of its snapshot, so an event of a transaction still open is never skipped.';
COMMENT ON COLUMN sms_webhook_fanout.xact IS 'Events of transactions ordered before this one are done (with event_id: of this one, up to event_id).';
COMMENT ON COLUMN sms_webhook_fanout.event_id IS 'Within xact, the last event read (0: none yet).';
COMMENT ON COLUMN sms_webhook_fanout.updated_at IS 'When a fan-out last moved the cursor.';

-- The trigger goes (0010 made it again on the partitioned table), and its function with it.
-- The opt-out and opt-in triggers of sms_suppressions stay: they are rare.
DROP TRIGGER sms_message_events_webhooks ON sms_message_events;
DROP FUNCTION sms_webhooks_from_message_events();

-- The health view of 0013, plus the fan-out's lag: how long ago the first event past the cursor
-- happened (the same index, one row); null when every event has been fanned out.
CREATE OR REPLACE VIEW sms_webhook_health AS
SELECT w.id                   AS endpoint_id,
       w.api_key_id,
       w.url,
       w.events,
       w.enabled,
       w.disabled_reason,
       w.disabled_at,
       w.last_success_at,
       w.last_failure_at,
       w.last_error,
       w.failing_since,
       coalesce(p.pending, 0) AS pending,
       extract(epoch FROM now() - p.oldest)::numeric(12, 3) AS oldest_pending_seconds,
       w.parked_until,
       extract(epoch FROM now() - lag.occurred_at)::numeric(12, 3) AS fanout_lag_seconds
FROM sms_webhook_endpoints w
LEFT JOIN LATERAL (
    SELECT count(*) AS pending, min(d.created_at) AS oldest
    FROM sms_webhook_deliveries d
    WHERE d.endpoint_id = w.id AND d.state = 'pending'
) p ON true
LEFT JOIN LATERAL (
    SELECT e.occurred_at
    FROM sms_webhook_fanout f
    JOIN sms_message_events e
      ON (e.xact, e.id) > (f.xact, f.event_id)
     AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
     AND (e.event_type = 'received'
          OR (e.event_type IN ('transition', 'canceled')
              AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                  'expired', 'canceled', 'read')))
    ORDER BY e.xact, e.id
    LIMIT 1
) lag ON true;
COMMENT ON VIEW sms_webhook_health IS 'Per webhook endpoint (never its secret): enabled or why not, last success, last failure and its error, failing since, its backlog (pending deliveries, age of the oldest), until when its deliveries wait for a probe (parked_until), and how far behind the fan-out of events into deliveries is (fanout_lag_seconds, the same on every row: a long writing transaction anywhere in the cluster holds it back).';
