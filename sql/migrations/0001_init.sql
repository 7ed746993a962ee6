-- 0001: the tables of DESIGN section 3. Constraints make illegal states impossible; every column a DBA
-- reads carries a COMMENT.

CREATE TABLE sms_api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_sha256  text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
COMMENT ON TABLE sms_api_keys IS 'Keys that may call the HTTP API. Only the SHA-256 of a key is kept; the key itself is shown once at creation.';
COMMENT ON COLUMN sms_api_keys.name IS 'Who the key was made for (free text).';
COMMENT ON COLUMN sms_api_keys.key_sha256 IS 'Lowercase hex SHA-256 of the bearer key.';
COMMENT ON COLUMN sms_api_keys.revoked_at IS 'Set when the key was revoked; a revoked key gets 401.';

CREATE TABLE sms_senders (
    phone_number text PRIMARY KEY CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$'),
    provider     text NOT NULL CHECK (provider IN ('twilio', 'signalwire')),
    enabled      boolean NOT NULL DEFAULT true,
    is_default   boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT is_default OR enabled)
);
-- At most one default sender.
CREATE UNIQUE INDEX sms_senders_one_default ON sms_senders (is_default) WHERE is_default;
COMMENT ON TABLE sms_senders IS 'Numbers we may send from ("ghost numbers"); the number decides the provider.';
COMMENT ON COLUMN sms_senders.phone_number IS 'Sender number in E.164.';
COMMENT ON COLUMN sms_senders.provider IS 'Provider that owns the number: twilio or signalwire.';
COMMENT ON COLUMN sms_senders.enabled IS 'false = refused as "from" by the API; queued work still goes out.';
COMMENT ON COLUMN sms_senders.is_default IS 'The sender used when a request names no "from" (at most one).';

CREATE TABLE sms_conversations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    from_number     text NOT NULL CHECK (from_number ~ '^\+[1-9][0-9]{1,14}$'),
    to_number       text NOT NULL CHECK (to_number ~ '^\+[1-9][0-9]{1,14}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (from_number, to_number)
);
COMMENT ON TABLE sms_conversations IS 'One thread per (sender number, recipient number).';
COMMENT ON COLUMN sms_conversations.last_message_at IS 'Moves on every message created in the thread and every status change of its messages.';

CREATE TABLE sms_messages (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id  uuid NOT NULL REFERENCES sms_conversations (id),
    direction        text NOT NULL DEFAULT 'outbound' CHECK (direction = 'outbound'),
    from_number      text NOT NULL CHECK (from_number ~ '^\+[1-9][0-9]{1,14}$'),
    to_number        text NOT NULL CHECK (to_number ~ '^\+[1-9][0-9]{1,14}$'),
    body             text NOT NULL CHECK (length(body) BETWEEN 1 AND 1600),
    provider         text NOT NULL CHECK (provider IN ('twilio', 'signalwire')),
    provider_sid     text,
    delivery_status  text NOT NULL DEFAULT 'pending' CHECK (delivery_status IN
        ('pending', 'queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'canceled', 'read')),
    error_code       text,
    error_category   text CHECK (error_category IN ('retryable', 'permanent', 'ambiguous', 'config', 'delivery')),
    error_message    text,
    -- 1,600 astral characters are 1,600 surrogate pairs; a pair never splits, so 33 fit a part: 49 parts.
    segments         integer NOT NULL CHECK (segments BETWEEN 1 AND 49),
    encoding         text NOT NULL CHECK (encoding IN ('GSM-7', 'UCS-2')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    api_key_id       bigint REFERENCES sms_api_keys (id),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash     text,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    final_at         timestamptz,
    UNIQUE (provider, provider_sid),
    UNIQUE (api_key_id, idempotency_key),
    -- An idempotency key is only meaningful with the request it was first used for.
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    -- Once a provider has accepted a message, we know its sid.
    CHECK (delivery_status IN ('pending', 'failed', 'canceled') OR provider_sid IS NOT NULL),
    -- Canceled only ever happens before any provider saw it.
    CHECK (delivery_status <> 'canceled' OR provider_sid IS NULL),
    -- Terminal states carry the time they were reached; non-terminal ones do not.
    CHECK ((delivery_status IN ('delivered', 'undelivered', 'failed', 'canceled', 'read')) = (final_at IS NOT NULL))
);
CREATE INDEX sms_messages_conversation_idx ON sms_messages (conversation_id, created_at);
-- The status sweeper looks for accepted messages that stayed non-terminal too long.
CREATE INDEX sms_messages_open_idx ON sms_messages (submitted_at)
    WHERE delivery_status IN ('queued', 'sending', 'sent');
CREATE INDEX sms_messages_status_idx ON sms_messages (delivery_status, created_at);
COMMENT ON TABLE sms_messages IS 'Every outbound message, its recorded fate and its provider identity.';
COMMENT ON COLUMN sms_messages.id IS 'Our message id, returned by POST /sms/send and carried in status callback URLs.';
COMMENT ON COLUMN sms_messages.from_number IS 'Sender number, E.164.';
COMMENT ON COLUMN sms_messages.to_number IS 'Recipient number, E.164.';
COMMENT ON COLUMN sms_messages.body IS 'Message text (never logged).';
COMMENT ON COLUMN sms_messages.provider IS 'Provider chosen by the sender number: twilio or signalwire.';
COMMENT ON COLUMN sms_messages.provider_sid IS 'Provider''s id for the message (Twilio SM..., SignalWire uuid); null until accepted.';
COMMENT ON COLUMN sms_messages.delivery_status IS 'Lifecycle: pending < queued < sending < sent < delivered/undelivered/failed < read; canceled only from pending. Only moves forward.';
COMMENT ON COLUMN sms_messages.error_code IS 'Provider error code of the final failure (as the provider wrote it).';
COMMENT ON COLUMN sms_messages.error_category IS 'retryable, permanent, ambiguous, config, or delivery (reported by a status callback).';
COMMENT ON COLUMN sms_messages.error_message IS 'Readable reason of the error.';
COMMENT ON COLUMN sms_messages.segments IS 'SMS parts the body needs (GSM-7 160/153, UCS-2 70/67 per part).';
COMMENT ON COLUMN sms_messages.encoding IS 'GSM-7 or UCS-2.';
COMMENT ON COLUMN sms_messages.attempts IS 'Send attempts started so far.';
COMMENT ON COLUMN sms_messages.idempotency_key IS 'Idempotency-Key header of the creating request; unique per API key.';
COMMENT ON COLUMN sms_messages.request_hash IS 'SHA-256 of the creating request, to tell a replay from a reuse of the key.';
COMMENT ON COLUMN sms_messages.request_id IS 'X-Request-ID of the creating request, to find its log lines.';
COMMENT ON COLUMN sms_messages.submitted_at IS 'When the provider accepted the message.';
COMMENT ON COLUMN sms_messages.final_at IS 'When the message reached a terminal status.';

CREATE TABLE sms_alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('message_failed', 'provider_config')),
    message_id       uuid REFERENCES sms_messages (id) ON DELETE CASCADE,
    provider         text CHECK (provider IN ('twilio', 'signalwire')),
    error_code       text,
    error_category   text,
    error_message    text,
    payload          jsonb NOT NULL,
    delivery_state   text NOT NULL DEFAULT 'pending'
        CHECK (delivery_state IN ('pending', 'delivered', 'failed', 'not_configured')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CHECK ((kind = 'message_failed') = (message_id IS NOT NULL)),
    CHECK ((delivery_state = 'delivered') = (delivered_at IS NOT NULL))
);
-- One final-failure alert per message, however many paths report the failure.
CREATE UNIQUE INDEX sms_alerts_one_per_message ON sms_alerts (message_id) WHERE kind = 'message_failed';
COMMENT ON TABLE sms_alerts IS 'Final message failures and operator alerts, with the state of their delivery to ALERT_WEBHOOK_URL.';
COMMENT ON COLUMN sms_alerts.kind IS 'message_failed (the sender''s owner is told) or provider_config (the operator is told).';
COMMENT ON COLUMN sms_alerts.payload IS 'JSON sent to ALERT_WEBHOOK_URL (recipient masked, no body).';
COMMENT ON COLUMN sms_alerts.delivery_state IS 'pending, delivered, failed (gave up), or not_configured (no ALERT_WEBHOOK_URL).';

CREATE TABLE sms_outbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('send_sms', 'deliver_alert')),
    message_id          uuid UNIQUE REFERENCES sms_messages (id) ON DELETE CASCADE,
    alert_id            bigint UNIQUE REFERENCES sms_alerts (id) ON DELETE CASCADE,
    provider            text CHECK (provider IN ('twilio', 'signalwire')),
    state               text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'leased')),
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    attempt_started_at  timestamptz,
    last_error_code     text,
    last_error_category text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'send_sms') = (message_id IS NOT NULL AND provider IS NOT NULL)),
    CHECK ((kind = 'deliver_alert') = (alert_id IS NOT NULL)),
    -- A leased row always says who holds it and until when.
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- The claim reads due rows in next_attempt_at order; a leased row's next_attempt_at is its lease
-- expiry, so one index serves both fresh work and the rescue of expired leases.
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at);
-- Hot, small, churned table: vacuum it after a fixed number of dead rows rather than a fraction.
ALTER TABLE sms_outbox SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 2000,
    fillfactor = 80
);
COMMENT ON TABLE sms_outbox IS 'The work queue: one row per pending piece of work. Finished work is deleted, so this table stays small.';
COMMENT ON COLUMN sms_outbox.kind IS 'send_sms (send message_id) or deliver_alert (POST alert_id to ALERT_WEBHOOK_URL).';
COMMENT ON COLUMN sms_outbox.provider IS 'Provider of a send_sms row, so a paused provider''s work can be skipped.';
COMMENT ON COLUMN sms_outbox.state IS 'ready = waiting for next_attempt_at; leased = a dispatcher holds it until lease_expires_at.';
COMMENT ON COLUMN sms_outbox.attempts IS 'Attempts claimed so far (a config error gives its attempt back).';
COMMENT ON COLUMN sms_outbox.next_attempt_at IS 'When the row may next be claimed; for a leased row this equals lease_expires_at (rescue time).';
COMMENT ON COLUMN sms_outbox.lease_owner IS 'Dispatcher (host:pid:uuid) holding the lease.';
COMMENT ON COLUMN sms_outbox.lease_expires_at IS 'Past this time the lease is void and any dispatcher may rescue the row.';
COMMENT ON COLUMN sms_outbox.attempt_started_at IS 'Set (committed) just before a provider call; non-null on a rescued row means the last attempt may have reached the provider.';
COMMENT ON COLUMN sms_outbox.last_error IS 'Readable reason of the last failed attempt.';

CREATE TABLE sms_message_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid REFERENCES sms_messages (id) ON DELETE CASCADE,
    event_type      text NOT NULL CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep')),
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
    CHECK (message_id IS NOT NULL OR event_type = 'callback')
);
CREATE INDEX sms_message_events_message_idx ON sms_message_events (message_id, id);
-- Exact duplicate callbacks (same message, status, error code) are recorded once.
CREATE UNIQUE INDEX sms_message_events_callback_once ON sms_message_events
    (message_id, to_status, coalesce(error_code, ''))
    WHERE event_type = 'callback' AND message_id IS NOT NULL;
COMMENT ON TABLE sms_message_events IS 'Append-only history of each message: created, attempts, callbacks (raw), transitions, alerts.';
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, sweep.';
COMMENT ON COLUMN sms_message_events.attempt IS 'Attempt number for attempt_started / attempt_result.';
COMMENT ON COLUMN sms_message_events.from_status IS 'Status before a transition.';
COMMENT ON COLUMN sms_message_events.to_status IS 'Status after a transition, or the status a callback reported.';
COMMENT ON COLUMN sms_message_events.error_category IS 'Outcome class of an attempt: sent, retryable, permanent, ambiguous, config.';
COMMENT ON COLUMN sms_message_events.detail IS 'Raw callback payload or structured detail (never the body).';

CREATE TABLE sms_provider_pauses (
    provider       text PRIMARY KEY CHECK (provider IN ('twilio', 'signalwire')),
    paused_until   timestamptz NOT NULL,
    failures       integer NOT NULL DEFAULT 1 CHECK (failures >= 1),
    error_code     text,
    reason         text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sms_provider_pauses IS 'Providers paused after a configuration error (bad credentials, unknown sender); work for them is not claimed until paused_until. Delete the row to resume at once.';
COMMENT ON COLUMN sms_provider_pauses.failures IS 'Consecutive config failures; the pause doubles with each, up to a cap.';

-- Queue health at a glance, for DBAs and smsctl.
CREATE VIEW sms_queue_health AS
SELECT kind,
       state,
       count(*)                                                         AS depth,
       count(*) FILTER (WHERE next_attempt_at <= now())                AS due,
       extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now()))::numeric(12, 3)
                                                                        AS oldest_due_seconds
FROM sms_outbox
GROUP BY kind, state;
COMMENT ON VIEW sms_queue_health IS 'Outbox depth by kind and state, how much is due now, and the age of the oldest due row.';
