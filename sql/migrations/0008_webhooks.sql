-- 0008: status webhooks to the customer's app (issue 14, DESIGN section 13), signed to the Standard
-- Webhooks spec. Every status change of a message is already one row in sms_message_events; a
-- statement-level trigger there (and one on sms_suppressions) turns the rows of each statement into
-- deliveries, in the same transaction, so no code path can change a status without its webhook.
-- Each delivery is outbox work of its own kind (deliver_webhook), claimed by its own loop with its
-- own index, so webhook work never stands in front of an SMS send.

-- Where a customer's app wants to hear about the messages of one API key.
CREATE TABLE sms_webhook_endpoints (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_key_id                  bigint NOT NULL REFERENCES sms_api_keys (id) ON DELETE CASCADE,
    url                         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    -- whsec_ + base64 of at least 24 random bytes (32 characters).
    secret                      text NOT NULL
        CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    previous_secret             text
        CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    previous_secret_expires_at  timestamptz,
    events                      text[] NOT NULL DEFAULT '{}' CHECK (events <@ ARRAY[
        'message.queued', 'message.sent', 'message.delivered', 'message.undelivered',
        'message.failed', 'message.expired', 'message.canceled', 'message.read',
        'message.received', 'recipient.opted_out', 'recipient.opted_in']::text[]),
    enabled                     boolean NOT NULL DEFAULT true,
    disabled_reason             text,
    disabled_at                 timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    last_success_at             timestamptz,
    last_failure_at             timestamptz,
    last_error                  text,
    failing_since               timestamptz,
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL)),
    CHECK (enabled = (disabled_at IS NULL)),
    CHECK (enabled OR disabled_reason IS NOT NULL)
);
-- The fan-out finds a key's enabled endpoints; "is there any enabled endpoint at all" reads the
-- same index and is the whole cost of the triggers below when nobody registered one.
CREATE INDEX sms_webhook_endpoints_key_idx ON sms_webhook_endpoints (api_key_id) WHERE enabled;
COMMENT ON TABLE sms_webhook_endpoints IS 'Customer URLs that receive the status webhooks (Standard Webhooks) of the messages one API key created, and of the replies and opt-outs in its conversations.';
COMMENT ON COLUMN sms_webhook_endpoints.url IS 'Where deliveries are POSTed (https; http only to loopback or when ALLOW_HTTP_WEBHOOKS is set).';
COMMENT ON COLUMN sms_webhook_endpoints.secret IS 'Signing secret (whsec_ + base64), shown once at creation; never in a view or a log.';
COMMENT ON COLUMN sms_webhook_endpoints.previous_secret IS 'The secret before the last rotation: deliveries carry its signature too until previous_secret_expires_at (24 h), so receivers can switch without losing one.';
COMMENT ON COLUMN sms_webhook_endpoints.events IS 'Event types this endpoint wants; empty = every type.';
COMMENT ON COLUMN sms_webhook_endpoints.enabled IS 'false = no new events are fanned out to it and its pending deliveries were dropped (disabled_reason says why).';
COMMENT ON COLUMN sms_webhook_endpoints.disabled_reason IS 'Why it was disabled: answered 410 Gone, failing for WEBHOOK_RETRY_HOURS, or removed by its owner.';
COMMENT ON COLUMN sms_webhook_endpoints.last_success_at IS 'When a delivery last got a 2xx answer (kept to the second: written at most once a second).';
COMMENT ON COLUMN sms_webhook_endpoints.last_failure_at IS 'When a delivery attempt last failed (non-2xx, connection error, timeout, refused address); written at most once a second, with last_error.';
COMMENT ON COLUMN sms_webhook_endpoints.last_error IS 'Readable reason of the last failed attempt.';
COMMENT ON COLUMN sms_webhook_endpoints.failing_since IS 'First failure since the last success; null while healthy. Failing for WEBHOOK_RETRY_HOURS disables the endpoint and alerts the operator.';

-- One event for one endpoint: the body signed and sent, and how its delivery went. The id is the
-- Standard Webhooks `webhook-id` (msg_ + its hex), the same on every retry.
CREATE TABLE sms_webhook_deliveries (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id  bigint NOT NULL REFERENCES sms_webhook_endpoints (id) ON DELETE CASCADE,
    event_type   text NOT NULL CHECK (event_type IN (
        'message.queued', 'message.sent', 'message.delivered', 'message.undelivered',
        'message.failed', 'message.expired', 'message.canceled', 'message.read',
        'message.received', 'recipient.opted_out', 'recipient.opted_in')),
    message_id   uuid REFERENCES sms_messages (id) ON DELETE SET NULL,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status  integer,
    last_error   text,
    delivered_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);
-- An endpoint's deliveries by time (smsctl webhooks replay --since, retention), and its pending
-- ones (the health view's backlog; dropping them when it is disabled).
CREATE INDEX sms_webhook_deliveries_endpoint_idx ON sms_webhook_deliveries (endpoint_id, created_at);
CREATE INDEX sms_webhook_deliveries_pending_idx ON sms_webhook_deliveries (endpoint_id, created_at)
    WHERE state = 'pending';
-- Retention of finished deliveries, oldest first.
CREATE INDEX sms_webhook_deliveries_finished_idx ON sms_webhook_deliveries (created_at)
    WHERE state <> 'pending';
-- A message's webhooks (and ON DELETE SET NULL when retention deletes the message).
CREATE INDEX sms_webhook_deliveries_message_idx ON sms_webhook_deliveries (message_id)
    WHERE message_id IS NOT NULL;
COMMENT ON TABLE sms_webhook_deliveries IS 'One status webhook for one endpoint: the exact body (payload), its state (pending, delivered, failed) and its attempts. webhook-id = msg_ || replace(id::text, ''-'', '''').';
COMMENT ON COLUMN sms_webhook_deliveries.payload IS 'The body POSTed on every attempt: {"type", "timestamp", "data": {...}} (DESIGN section 13).';
COMMENT ON COLUMN sms_webhook_deliveries.occurred_at IS 'When the event happened (the body''s timestamp).';
COMMENT ON COLUMN sms_webhook_deliveries.state IS 'pending (in sms_outbox as deliver_webhook), delivered (2xx) or failed (gave up after WEBHOOK_RETRY_HOURS, 410 Gone, or the endpoint was disabled).';
COMMENT ON COLUMN sms_webhook_deliveries.last_status IS 'HTTP status of the last attempt; null when it got no answer.';
COMMENT ON COLUMN sms_webhook_deliveries.last_error IS 'Why the last attempt failed, or why the delivery was dropped.';

-- Outbox work of a third kind. Its own due index keeps the two claims apart: the SMS claim reads
-- sms_outbox_pace_idx (sends) and sms_outbox_due_idx (alerts only, from here on), the webhook
-- claim sms_outbox_webhook_due_idx, so a deep backlog of one never lengthens the other's scan.
ALTER TABLE sms_outbox
    ADD COLUMN webhook_delivery_id uuid UNIQUE
        REFERENCES sms_webhook_deliveries (id) ON DELETE CASCADE;
ALTER TABLE sms_outbox DROP CONSTRAINT sms_outbox_kind_check;
ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_kind_check
    CHECK (kind IN ('send_sms', 'deliver_alert', 'deliver_webhook'));
-- With the checks of 0001 and 0006 (message_id, alert_id and sender belong to their kinds), a
-- deliver_webhook row carries its delivery and nothing else.
ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_webhook_check
    CHECK ((kind = 'deliver_webhook') = (webhook_delivery_id IS NOT NULL));
COMMENT ON COLUMN sms_outbox.kind IS 'send_sms (send message_id), deliver_alert (POST alert_id to ALERT_WEBHOOK_URL) or deliver_webhook (POST webhook_delivery_id to its endpoint).';
COMMENT ON COLUMN sms_outbox.webhook_delivery_id IS 'deliver_webhook: the sms_webhook_deliveries row to POST.';
DROP INDEX sms_outbox_due_idx;
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at) WHERE kind = 'deliver_alert';
CREATE INDEX sms_outbox_webhook_due_idx ON sms_outbox (next_attempt_at)
    WHERE kind = 'deliver_webhook';

-- The operator hears of an endpoint disabled after failing for WEBHOOK_RETRY_HOURS.
ALTER TABLE sms_alerts DROP CONSTRAINT sms_alerts_kind_check;
ALTER TABLE sms_alerts ADD CONSTRAINT sms_alerts_kind_check
    CHECK (kind IN ('message_failed', 'provider_config', 'duplicate_send',
                    'webhook_endpoint_disabled'));
COMMENT ON COLUMN sms_alerts.kind IS 'message_failed (the sender''s owner is told), provider_config, duplicate_send or webhook_endpoint_disabled (the operator is told).';

-- Fan-out of message events. One set-based INSERT per statement, whatever number of events the
-- statement wrote (a dispatcher batch records up to a hundred transitions at once). The AFTER
-- STATEMENT trigger runs once the whole statement, CTEs included, is done, so it reads the
-- message rows as that statement left them. Which rows are webhooks:
-- * 'transition' rows to a status of DESIGN section 13 (every guarded status change writes one;
--   `sending` and `pending` are not events of the contract);
-- * 'canceled' rows (messages_cancel records pending -> canceled that way, without a transition
--   row), unless the same statement also wrote the transition, so a cancel is one event;
-- * 'received' rows (inbound messages), to the key that sent last in the conversation, which
--   messages_receive stores as the inbound message's api_key_id.
-- A message goes to the enabled endpoints of the key that created it, filtered by `events`.
CREATE FUNCTION sms_webhooks_from_message_events() RETURNS trigger
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
        RETURNING id
    )
    INSERT INTO sms_outbox (kind, webhook_delivery_id)
    SELECT 'deliver_webhook', made.id FROM made;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sms_webhooks_from_message_events() IS 'Turns the status changes, cancels and inbound messages one statement recorded in sms_message_events into webhook deliveries (and their outbox rows), in the same transaction.';
CREATE TRIGGER sms_message_events_webhooks
    AFTER INSERT ON sms_message_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION sms_webhooks_from_message_events();

-- Fan-out of opt-outs (a suppression added: recipient.opted_out) and opt-ins (removed:
-- recipient.opted_in) to the endpoints of the key that sent last to the recipient: from that
-- sender, or from any sender for an every-sender suppression (sms_messages_to_idx, read
-- backwards). A suppression that already existed (ON CONFLICT DO NOTHING) is no event.
CREATE FUNCTION sms_webhooks_from_suppressions() RETURNS trigger
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
        RETURNING id
    )
    INSERT INTO sms_outbox (kind, webhook_delivery_id)
    SELECT 'deliver_webhook', made.id FROM made;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sms_webhooks_from_suppressions() IS 'Turns suppressions added (recipient.opted_out) or removed (recipient.opted_in) by one statement into webhook deliveries to the key that sent last to the recipient.';
CREATE TRIGGER sms_suppressions_webhooks_added
    AFTER INSERT ON sms_suppressions
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION sms_webhooks_from_suppressions();
CREATE TRIGGER sms_suppressions_webhooks_removed
    AFTER DELETE ON sms_suppressions
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION sms_webhooks_from_suppressions();

-- Delivery health per endpoint, for DBAs, smsctl webhooks list, the ops console and /metrics.
CREATE VIEW sms_webhook_health AS
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
       extract(epoch FROM now() - p.oldest)::numeric(12, 3) AS oldest_pending_seconds
FROM sms_webhook_endpoints w
LEFT JOIN LATERAL (
    SELECT count(*) AS pending, min(d.created_at) AS oldest
    FROM sms_webhook_deliveries d
    WHERE d.endpoint_id = w.id AND d.state = 'pending'
) p ON true;
COMMENT ON VIEW sms_webhook_health IS 'Per webhook endpoint (never its secret): enabled or why not, last success, last failure and its error, failing since, and its backlog (pending deliveries, age of the oldest).';
