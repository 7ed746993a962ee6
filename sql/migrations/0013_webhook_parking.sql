-- 0013: a failing webhook endpoint is parked. Until now each of its pending deliveries was tried
-- on its own schedule, so a dead endpoint with a deep backlog cost one POST, one failure and one
-- settle per delivery, thousands a minute, on the dispatcher that also sends the SMS (bench
-- webhooks: end-to-end SMS latency x2.1). Now the delivery whose attempt failed is the endpoint's
-- probe: the endpoint's other pending deliveries, and every new one, wait until
-- `parked_until` (the probe's retry plus the time its answer may take); a success releases them
-- all at once, and parked deliveries whose probe is lost wake by themselves at `parked_until`.
-- The settle statement does both (sql/queries/webhook_deliveries.sql); the fan-out triggers of
-- 0008 make a parked endpoint's deliveries due when it wakes.
ALTER TABLE sms_webhook_endpoints ADD COLUMN parked_until timestamptz;
COMMENT ON COLUMN sms_webhook_endpoints.parked_until IS 'While the endpoint fails: its deliveries other than the one being retried (the probe) wait until this time; cleared by a success, which makes them due at once.';

CREATE OR REPLACE FUNCTION sms_webhooks_from_message_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- No endpoint anywhere (most installations): one probe of an empty index, and out.
    IF NOT EXISTS (SELECT 1 FROM sms_webhook_endpoints WHERE enabled) THEN
        RETURN NULL;
    END IF;
    WITH events AS (
        SELECT e.id, e.message_id, e.occurred_at, e.from_status AS previous_status,
               e.to_status AS status,
               CASE e.event_type WHEN 'received' THEN 'message.received'
                                 ELSE 'message.' || e.to_status END AS type
        FROM new_events e
        WHERE e.message_id IS NOT NULL
          AND ((e.event_type = 'transition'
                AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                    'expired', 'canceled', 'read'))
               OR (e.event_type = 'canceled' AND e.to_status = 'canceled'
                   AND NOT EXISTS (SELECT 1 FROM new_events t
                                   WHERE t.message_id = e.message_id
                                     AND t.event_type = 'transition'
                                     AND t.to_status = 'canceled'))
               OR e.event_type = 'received')
    ),
    made AS (
        INSERT INTO sms_webhook_deliveries
            (endpoint_id, event_type, message_id, payload, occurred_at)
        SELECT w.id, ev.type, m.id,
               jsonb_build_object(
                   'type', ev.type,
                   'timestamp', to_char(ev.occurred_at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'data', jsonb_build_object(
                       'id', m.id,
                       'conversation_id', m.conversation_id,
                       'status', ev.status,
                       'previous_status', ev.previous_status,
                       'to', m.to_number,
                       'from', m.from_number,
                       'error_code', m.error_code,
                       'error_category', m.error_category,
                       'error_message', m.error_message,
                       'segments', m.segments,
                       'attempts', m.attempts,
                       'direction', m.direction)),
               ev.occurred_at
        FROM events ev
        -- One primary-key probe per event, whatever the statement's size: PL/pgSQL keeps the
        -- first plan of this query for the session, and a join the planner chose for a large
        -- transition table (a scan of sms_messages) would then run for every one-row statement.
        -- OFFSET 0 keeps the subquery a nested-loop probe.
        CROSS JOIN LATERAL (
            SELECT m.id, m.conversation_id, m.to_number, m.from_number, m.error_code,
                   m.error_category, m.error_message, m.segments, m.attempts, m.direction,
                   m.api_key_id
            FROM sms_messages m
            WHERE m.id = ev.message_id
            OFFSET 0
        ) m
        JOIN sms_webhook_endpoints w
          ON w.api_key_id = m.api_key_id AND w.enabled
         AND (w.events = '{}' OR ev.type = ANY (w.events))
        ORDER BY ev.id, w.id
        RETURNING id, endpoint_id
    )
    -- Due at once, unless the endpoint is parked (failing): then when it wakes.
    INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)
    SELECT 'deliver_webhook', made.id, greatest(now(), w.parked_until)
    FROM made
    JOIN sms_webhook_endpoints w ON w.id = made.endpoint_id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION sms_webhooks_from_suppressions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sms_webhook_endpoints WHERE enabled) THEN
        RETURN NULL;
    END IF;
    WITH events AS (
        SELECT s.id, s.phone_number, s.sender_number, s.reason,
               CASE TG_OP WHEN 'INSERT' THEN 'recipient.opted_out'
                          ELSE 'recipient.opted_in' END AS type,
               CASE TG_OP WHEN 'INSERT' THEN s.created_at ELSE now() END AS occurred_at
        FROM changed s
    ),
    made AS (
        INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload, occurred_at)
        SELECT w.id, ev.type,
               jsonb_build_object(
                   'type', ev.type,
                   'timestamp', to_char(ev.occurred_at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'data', jsonb_build_object(
                       'phone_number', ev.phone_number,
                       'sender_number', ev.sender_number,
                       'reason', ev.reason)),
               ev.occurred_at
        FROM events ev
        CROSS JOIN LATERAL (
            SELECT m.api_key_id
            FROM sms_messages m
            WHERE m.to_number = ev.phone_number AND m.direction = 'outbound'
              AND (ev.sender_number IS NULL OR m.from_number = ev.sender_number)
            ORDER BY m.created_at DESC, m.id DESC
            LIMIT 1
        ) last
        JOIN sms_webhook_endpoints w
          ON w.api_key_id = last.api_key_id AND w.enabled
         AND (w.events = '{}' OR ev.type = ANY (w.events))
        ORDER BY ev.id, w.id
        RETURNING id, endpoint_id
    )
    -- Due at once, unless the endpoint is parked (failing): then when it wakes.
    INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)
    SELECT 'deliver_webhook', made.id, greatest(now(), w.parked_until)
    FROM made
    JOIN sms_webhook_endpoints w ON w.id = made.endpoint_id;
    RETURN NULL;
END
$$;

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
       w.parked_until
FROM sms_webhook_endpoints w
LEFT JOIN LATERAL (
    SELECT count(*) AS pending, min(d.created_at) AS oldest
    FROM sms_webhook_deliveries d
    WHERE d.endpoint_id = w.id AND d.state = 'pending'
) p ON true;
COMMENT ON VIEW sms_webhook_health IS 'Per webhook endpoint (never its secret): enabled or why not, last success, last failure and its error, failing since, its backlog (pending deliveries, age of the oldest), and until when its deliveries wait for a probe (parked_until).';
