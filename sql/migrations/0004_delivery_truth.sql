-- Delivery truth under slow networks (issue 10): reconciliation that looks twice before a resend,
-- callbacks de-duplicated per provider sid, and detected double sends as facts with an alert.

-- Lookups of an unresolved attempt that found nothing at the provider. A resend happens only when
-- RECONCILE_LOOKUPS lookups, RECONCILE_SETTLE_SECONDS apart, have all missed; a new attempt
-- starts from 0 again.
ALTER TABLE sms_outbox ADD COLUMN reconcile_misses integer NOT NULL DEFAULT 0
    CHECK (reconcile_misses >= 0);
COMMENT ON COLUMN sms_outbox.reconcile_misses IS 'Lookups at the provider that did not find the unresolved attempt (attempt_started_at); the message is sent again only after RECONCILE_LOOKUPS misses.';

-- New event types: a lookup that found nothing (reconcile_miss) and a provider message carrying our
-- id whose sid is not the recorded one (duplicate_send_detected).
ALTER TABLE sms_message_events DROP CONSTRAINT sms_message_events_event_type_check;
ALTER TABLE sms_message_events ADD CONSTRAINT sms_message_events_event_type_check
    CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep', 'reconcile_miss',
         'duplicate_send_detected'));
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, reconcile_miss, duplicate_send_detected, sweep.';

-- Exact duplicate callbacks are recorded once per (message, sid, status, error code): a stray
-- copy's callbacks no longer hide the recorded sid's own callbacks of the same status.
DROP INDEX sms_message_events_callback_once;
CREATE UNIQUE INDEX sms_message_events_callback_once ON sms_message_events
    (message_id, coalesce(provider_sid, ''), to_status, coalesce(error_code, ''))
    WHERE event_type = 'callback' AND message_id IS NOT NULL;

-- One duplicate_send_detected event per (message, stray sid); the index also answers "does another
-- message of ours own this sid?" during reconciliation (a stray copy is never adopted by another).
CREATE UNIQUE INDEX sms_message_events_duplicate_once ON sms_message_events
    (provider, provider_sid, message_id)
    WHERE event_type = 'duplicate_send_detected';

-- Operator alert kind duplicate_send: one per message, like message_failed.
ALTER TABLE sms_alerts DROP CONSTRAINT sms_alerts_kind_check;
ALTER TABLE sms_alerts ADD CONSTRAINT sms_alerts_kind_check
    CHECK (kind IN ('message_failed', 'provider_config', 'duplicate_send'));
ALTER TABLE sms_alerts DROP CONSTRAINT sms_alerts_check;
ALTER TABLE sms_alerts ADD CONSTRAINT sms_alerts_check
    CHECK ((kind IN ('message_failed', 'duplicate_send')) = (message_id IS NOT NULL));
CREATE UNIQUE INDEX sms_alerts_one_duplicate_per_message ON sms_alerts (message_id)
    WHERE kind = 'duplicate_send';
COMMENT ON COLUMN sms_alerts.kind IS 'message_failed (the sender''s owner is told), provider_config or duplicate_send (the operator is told).';
