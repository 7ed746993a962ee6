-- 0018: sms_webhook_health's fanout_lag_seconds (0016) read the whole event history. Its lateral
-- joined the cursor row to the events, so the planner walked sms_message_events_fanout_idx from
-- its start and filtered every event against the cursor (225 ms at 200,000 events, measured on
-- the bench's database): a cost that grew with the history, paid by the dispatcher's health
-- refresh every 15 s and by every /metrics scrape, smsctl webhooks list and /ops/webhooks. Now
-- the cursor is read first and the events are probed from it (the index condition starts at the
-- cursor, as in webhook_deliveries_fan_out), once for the view rather than once per endpoint.
-- Nothing else of the view changes.
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
) lag ON true;
COMMENT ON VIEW sms_webhook_health IS 'Per webhook endpoint (never its secret): enabled or why not, last success, last failure and its error, failing since, its backlog (pending deliveries, age of the oldest), until when its deliveries wait for a probe (parked_until), and how far behind the fan-out of events into deliveries is (fanout_lag_seconds, the same on every row: a long writing transaction anywhere in the cluster holds it back).';
