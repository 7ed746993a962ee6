-- 0007: consent, tenancy and limits (issue 13, DESIGN section 12): a suppression list honoured at
-- enqueue and at claim, inbound messages (replies and STOP), API key roles and per-key limits.

-- Recipients who must not be texted: by one sender (sender_number) or by any (sender_number NULL).
CREATE TABLE sms_suppressions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone_number       text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$'),
    sender_number      text CHECK (sender_number ~ '^\+[1-9][0-9]{1,14}$'),
    reason             text NOT NULL CHECK (reason IN ('stop_keyword', 'provider_opt_out', 'api', 'operator')),
    source_message_id  uuid REFERENCES sms_messages (id) ON DELETE SET NULL,
    api_key_id         bigint REFERENCES sms_api_keys (id),
    created_at         timestamptz NOT NULL DEFAULT now()
);
-- One suppression per (recipient, sender or every sender): '' stands for "every sender" here only.
CREATE UNIQUE INDEX sms_suppressions_once ON sms_suppressions (phone_number, coalesce(sender_number, ''));
COMMENT ON TABLE sms_suppressions IS 'Recipients who opted out (STOP), were refused by a provider as opted out (Twilio 21610), or were suppressed by an operator or API call: a send to them is refused at enqueue (422 recipient_opted_out) and canceled at claim.';
COMMENT ON COLUMN sms_suppressions.sender_number IS 'The sender the recipient opted out of; null = every sender (STOPALL, operator, or an API call without sender_number).';
COMMENT ON COLUMN sms_suppressions.reason IS 'stop_keyword (an inbound STOP...), provider_opt_out (Twilio 21610), api (POST /sms/suppressions), operator (smsctl).';
COMMENT ON COLUMN sms_suppressions.source_message_id IS 'The inbound STOP or the refused outbound message that caused it, when there is one.';

-- Inbound messages (replies, STOP) live beside outbound ones in their conversation: direction
-- 'inbound', status 'received' (final; it carries the provider sid of the inbound message).
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_direction_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_direction_check
    CHECK (direction IN ('outbound', 'inbound'));
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_delivery_status_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_delivery_status_check
    CHECK (delivery_status IN ('pending', 'queued', 'sending', 'sent', 'delivered', 'undelivered',
                               'failed', 'canceled', 'read', 'expired', 'received'));
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_check3;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_check3
    CHECK ((delivery_status IN ('delivered', 'undelivered', 'failed', 'canceled', 'read', 'expired',
                                'received')) = (final_at IS NOT NULL));
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_inbound_received
    CHECK ((direction = 'inbound') = (delivery_status = 'received'));
-- A suppression that arrived after enqueue cancels the message at claim: category 'suppressed'.
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_error_category_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_error_category_check
    CHECK (error_category IN ('retryable', 'permanent', 'ambiguous', 'config', 'delivery', 'suppressed'));
-- An inbound message may carry no text (media only); outbound ones always do.
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_body_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_body_check
    CHECK (length(body) <= 1600 AND (direction = 'inbound' OR length(body) >= 1));
COMMENT ON COLUMN sms_messages.direction IS 'outbound (we send it) or inbound (a reply the provider posted to /webhook/*/inbound; status received).';
-- Inbound messages are found by their provider sid (a webhook posted twice is stored once):
-- UNIQUE (provider, provider_sid) from 0001 serves it.

ALTER TABLE sms_message_events DROP CONSTRAINT sms_message_events_event_type_check;
ALTER TABLE sms_message_events ADD CONSTRAINT sms_message_events_event_type_check
    CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep', 'reconcile_miss',
         'duplicate_send_detected', 'held', 'expired', 'received', 'suppressed'));
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, reconcile_miss, duplicate_send_detected, sweep, held (quiet hours; detail.release_at), expired, received (inbound), suppressed (canceled at claim: the recipient opted out).';

-- Roles and limits of API keys.
ALTER TABLE sms_api_keys
    ADD COLUMN role text NOT NULL DEFAULT 'sender' CHECK (role IN ('sender', 'operator')),
    ADD COLUMN rate_per_minute integer CHECK (rate_per_minute > 0),
    ADD COLUMN daily_message_limit integer CHECK (daily_message_limit > 0),
    ADD COLUMN recipient_hourly_limit integer CHECK (recipient_hourly_limit > 0),
    ADD COLUMN allowed_countries text[] CHECK (cardinality(allowed_countries) > 0);
COMMENT ON COLUMN sms_api_keys.role IS 'sender: reads, lists, cancels and retries only the messages it created; operator: every message, and the ops console.';
COMMENT ON COLUMN sms_api_keys.rate_per_minute IS 'Send requests per UTC minute (a batch is one request); null = no limit.';
COMMENT ON COLUMN sms_api_keys.daily_message_limit IS 'Messages created per UTC day; null = no limit.';
COMMENT ON COLUMN sms_api_keys.recipient_hourly_limit IS 'Messages to one recipient in any trailing hour; null = no limit.';
COMMENT ON COLUMN sms_api_keys.allowed_countries IS 'ISO 3166 alpha-2 regions this key may text, within ALLOWED_COUNTRIES (a key narrows the list, never widens it); null = ALLOWED_COUNTRIES.';

-- Quota spent per key and window, shared by every API process. A process reserves a share of a
-- window's quota at a time (one guarded UPSERT), so the count is never a hot row of the send path.
CREATE TABLE sms_api_key_usage (
    api_key_id    bigint NOT NULL REFERENCES sms_api_keys (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('minute', 'day')),
    window_start  timestamptz NOT NULL,
    used          integer NOT NULL CHECK (used >= 0),
    PRIMARY KEY (api_key_id, kind, window_start)
);
COMMENT ON TABLE sms_api_key_usage IS 'Quota reserved per API key and window (UTC minute for rate_per_minute, UTC day for daily_message_limit) by the API processes; used never exceeds the key''s limit. Old windows are pruned by smsctl prune.';

-- Listing the messages one key created, newest first (tenancy), and counting a key's recent
-- messages to one recipient (recipient_hourly_limit) use these.
CREATE INDEX sms_messages_key_created_idx ON sms_messages (api_key_id, created_at, id)
    WHERE api_key_id IS NOT NULL;

CREATE VIEW sms_suppressed_recipients AS
SELECT s.phone_number,
       coalesce(s.sender_number, '*') AS sender_number,
       s.reason,
       s.source_message_id,
       s.api_key_id,
       s.created_at
FROM sms_suppressions s;
COMMENT ON VIEW sms_suppressed_recipients IS 'Every suppression: the recipient, the sender it applies to (* = every sender), why, and the message that caused it.';
