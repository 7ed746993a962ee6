-- sms_message_events: the append-only history (timeline, callbacks, sweeps, doubles, retention).

-- name: events_timeline
-- A message's history in insertion order, served by sms_message_events_message_idx (message_id, id).
SELECT id, event_type, attempt, from_status, to_status, provider, provider_sid, error_code,
       error_category, detail, occurred_at
FROM sms_message_events
WHERE message_id = %(message_id)s
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
-- Every callback is kept raw. The partial unique index sms_message_events_callback_once
-- (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, '')) WHERE event_type =
-- 'callback' makes an exact duplicate a no-op; RETURNING tells the caller whether this one was new.
-- The sid is part of the key: a stray copy's `delivered` never hides the recorded sid's own.
-- Callbacks for unknown messages (message_id NULL) are outside that index and always kept.
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
VALUES
    (%(message_id)s, 'callback', %(raw_status)s, %(provider)s, %(sid)s, %(error_code)s, %(detail)s)
ON CONFLICT (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, ''))
    WHERE event_type = 'callback' AND message_id IS NOT NULL
    DO NOTHING
RETURNING id;

-- name: events_record_duplicate_send
-- A provider message that carries our message id but is not the one we recorded: a double send,
-- detected. Once per (message, stray sid) (unique index sms_message_events_duplicate_once);
-- RETURNING says whether this is the first sight of that stray copy.
INSERT INTO sms_message_events
    (message_id, event_type, provider, provider_sid, detail)
VALUES
    (%(message_id)s, 'duplicate_send_detected', %(provider)s, %(sid)s,
     jsonb_build_object('recorded_sid', %(recorded_sid)s::text, 'raw_status', %(raw_status)s::text))
ON CONFLICT (provider, provider_sid, message_id)
    WHERE event_type = 'duplicate_send_detected'
    DO NOTHING
RETURNING id;

-- name: events_record_sweep
-- What the sweeper read from the provider, kept as a 'sweep' event (not deduplicated: each check
-- is a fact of its own).
INSERT INTO sms_message_events
    (message_id, event_type, to_status, provider, provider_sid, error_code, detail)
VALUES
    (%(message_id)s, 'sweep', %(raw_status)s, %(provider)s, %(sid)s, %(error_code)s, %(detail)s)
RETURNING id;
