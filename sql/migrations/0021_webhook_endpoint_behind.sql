-- 0021: a parked webhook endpoint costs its key's events nothing (issue 14: "a dead endpoint with a
-- deep backlog changes no SMS latency"). Until now the fan-out (0016) made a delivery for a parked
-- endpoint from every event of its key, as for a live one: a row, its indexes and its JSON body,
-- on the 2 cores the SMS path shares, for a delivery that could only wait (bench webhooks: the
-- p50 of the SMS path 7-11 % higher beside a dead endpoint). Now an endpoint the fan-out finds
-- parked falls behind instead: it keeps the fan-out's position at that moment (`behind_xact`,
-- `behind_event_id`), and the fan-out leaves it out until it has caught up by itself:
-- * the shared fan-out (webhook_deliveries_fan_out) makes deliveries for live endpoints only
--   (enabled, not parked, not behind); a parked one that is not behind yet gets the position;
-- * once it is no longer parked (its probe's success, or parked_until passed), its catch-up
--   (webhook_deliveries_catch_up) makes its deliveries from that position up to the shared
--   cursor, in order, a batch at a time, and then follows the shared cursor again;
-- * disabled while behind (410, 3 days of failures, its key revoked): the events it missed become
--   failed deliveries at once ("endpoint disabled"), as the pending ones it had are, so `smsctl
--   webhooks replay --since` sends them all after it is enabled again.
-- Every step of these holds the fan-out cursor's row lock (sms_webhook_fanout) and reads the
-- endpoints in a statement that starts after it got it, so each event goes to each endpoint
-- once: by the shared fan-out while the endpoint follows it, by its catch-up while it is behind.
-- No SMS transaction changes: the events are the same, and only the webhook loop reads them.
ALTER TABLE sms_webhook_endpoints
    ADD COLUMN behind_xact xid8,
    ADD COLUMN behind_event_id bigint,
    ADD CONSTRAINT sms_webhook_endpoints_behind_check
        CHECK ((behind_xact IS NULL) = (behind_event_id IS NULL));
COMMENT ON COLUMN sms_webhook_endpoints.behind_xact IS 'While the endpoint is behind the webhook fan-out (parked when the fan-out passed, migration 0021): with behind_event_id, the position (as sms_webhook_fanout''s) up to which its events have been made into deliveries; null when it follows the shared fan-out.';
COMMENT ON COLUMN sms_webhook_endpoints.behind_event_id IS 'See behind_xact.';

-- A webhook body for a message event, as the fan-out of 0016 wrote it inline (DESIGN section 13):
-- the shared fan-out, the catch-up and the failed deliveries of a disable make the same body.
CREATE FUNCTION sms_webhook_message_body(event_type text, occurred_at timestamptz,
                                         status text, previous_status text, m sms_messages)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'type', event_type,
        'timestamp', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', jsonb_build_object(
            'id', m.id,
            'conversation_id', m.conversation_id,
            'status', status,
            'previous_status', previous_status,
            'to', m.to_number,
            'from', m.from_number,
            'error_code', m.error_code,
            'error_category', m.error_category,
            'error_message', m.error_message,
            'segments', m.segments,
            'attempts', m.attempts,
            'direction', m.direction))
$$;
COMMENT ON FUNCTION sms_webhook_message_body(text, timestamptz, text, text, sms_messages) IS 'The body of a message webhook (DESIGN section 13): type, timestamp (the event''s), and the message''s fields as they are now, with the event''s status and previous_status.';

-- The webhook-worthy events past (after_xact, after_id) up to (upto_xact, upto_id), at most
-- max_events of them (null: all), in fan-out order, each with the webhook type it becomes and
-- whether it becomes one (`webhook`: a cancel whose transaction also wrote the transition is the
-- same event twice): what an endpoint's catch-up reads, and its disable while behind fails. The
-- WHERE repeats sms_message_events_fanout_idx's predicate word for word, so the range is read
-- from that index. One SELECT, so PostgreSQL inlines it into the calling query. The shared
-- fan-out (webhook_deliveries_fan_out) reads its events inline, with its bound at xmin.
CREATE FUNCTION sms_webhook_events_between(after_xact xid8, after_id bigint, upto_xact xid8,
                                           upto_id bigint, max_events bigint)
RETURNS TABLE (id bigint, xact xid8, message_id uuid, occurred_at timestamptz, type text,
               status text, previous_status text, webhook boolean)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.xact, b.message_id, b.occurred_at,
           CASE b.event_type WHEN 'received' THEN 'message.received'
                             ELSE 'message.' || b.to_status END,
           b.to_status, b.from_status,
           b.event_type <> 'canceled'
           OR (b.to_status = 'canceled'
               AND NOT EXISTS (SELECT 1 FROM sms_message_events t
                               WHERE t.message_id = b.message_id AND t.xact = b.xact
                                 AND t.event_type = 'transition' AND t.to_status = 'canceled'
                               OFFSET 0))
    FROM (
        SELECT e.id, e.xact, e.message_id, e.event_type, e.from_status, e.to_status,
               e.occurred_at
        FROM sms_message_events e
        WHERE (e.xact, e.id) > (after_xact, after_id)
          AND (e.xact, e.id) <= (upto_xact, upto_id)
          AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
          AND (e.event_type = 'received'
               OR (e.event_type IN ('transition', 'canceled')
                   AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                       'expired', 'canceled', 'read')))
        ORDER BY e.xact, e.id
        LIMIT max_events
    ) b
$$;
COMMENT ON FUNCTION sms_webhook_events_between(xid8, bigint, xid8, bigint, bigint) IS 'The webhook-worthy message events in a range of the fan-out''s order (xact, id), at most max_events (null: all), with the webhook type each becomes and whether it becomes one; what a webhook endpoint behind the fan-out catches up on (migration 0021).';

-- The health view of 0018, plus how far behind an endpoint is (behind_seconds: the age of the
-- first event past its position, any key's; null when it follows the shared fan-out). Its missed
-- events are not pending deliveries yet, so `pending` does not count them.
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
       extract(epoch FROM now() - lag.occurred_at)::numeric(12, 3) AS fanout_lag_seconds,
       extract(epoch FROM now() - behind.occurred_at)::numeric(12, 3) AS behind_seconds
FROM sms_webhook_endpoints w
LEFT JOIN LATERAL (
    SELECT count(*) AS pending, min(d.created_at) AS oldest
    FROM sms_webhook_deliveries d
    WHERE d.endpoint_id = w.id AND d.state = 'pending'
) p ON true
LEFT JOIN (
    SELECT e.occurred_at
    FROM sms_webhook_fanout f
    CROSS JOIN LATERAL (
        SELECT e.occurred_at
        FROM sms_message_events e
        WHERE (e.xact, e.id) > (f.xact, f.event_id)
          AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
          AND (e.event_type = 'received'
               OR (e.event_type IN ('transition', 'canceled')
                   AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                       'expired', 'canceled', 'read')))
        ORDER BY e.xact, e.id
        LIMIT 1
    ) e
) lag ON true
LEFT JOIN LATERAL (
    SELECT e.occurred_at
    FROM sms_message_events e
    WHERE w.behind_xact IS NOT NULL
      AND (e.xact, e.id) > (w.behind_xact, w.behind_event_id)
      AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
      AND (e.event_type = 'received'
           OR (e.event_type IN ('transition', 'canceled')
               AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                   'expired', 'canceled', 'read')))
    ORDER BY e.xact, e.id
    LIMIT 1
) behind ON true;
COMMENT ON VIEW sms_webhook_health IS 'Per webhook endpoint (never its secret): enabled or why not, last success, last failure and its error, failing since, its backlog (pending deliveries, age of the oldest), until when its deliveries wait for a probe (parked_until), how far behind the fan-out of events into deliveries is (fanout_lag_seconds, the same on every row: a long writing transaction anywhere in the cluster holds it back), and how far behind this endpoint is (behind_seconds: parked when the fan-out passed, its missed events wait to be made into deliveries).';
