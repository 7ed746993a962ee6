-- 0003: what operators and DBAs read (views with COMMENT ON) and the indexes behind message
-- listing, retention and requeueing.

-- GET /sms/messages and `smsctl list` page newest first over (created_at, id); the other filters
-- (status, conversation) have their own indexes from 0001.
CREATE INDEX sms_messages_created_idx ON sms_messages (created_at, id);
-- `smsctl prune` and `retry --failed-since` look for final messages by when they ended.
CREATE INDEX sms_messages_final_idx ON sms_messages (final_at) WHERE final_at IS NOT NULL;
-- Listing by recipient (to=... / smsctl list --number).
CREATE INDEX sms_messages_to_idx ON sms_messages (to_number, created_at);
-- Callbacks for unknown messages (message_id NULL) are pruned by age.
CREATE INDEX sms_message_events_orphan_idx ON sms_message_events (occurred_at)
    WHERE message_id IS NULL;
-- sms_provider_outcomes_1h reads the last hour of attempt outcomes only.
CREATE INDEX sms_message_events_outcome_idx ON sms_message_events (occurred_at)
    WHERE event_type IN ('attempt_result', 'reconciled');

-- Same columns as 0001's view, plus the oldest row's age whatever its due time and the number of
-- expired leases (work a crashed dispatcher left behind).
CREATE OR REPLACE VIEW sms_queue_health AS
SELECT kind,
       state,
       count(*)                                                         AS depth,
       count(*) FILTER (WHERE next_attempt_at <= now())                AS due,
       extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now()))::numeric(12, 3)
                                                                        AS oldest_due_seconds,
       extract(epoch FROM now() - min(created_at))::numeric(12, 3)      AS oldest_seconds,
       count(*) FILTER (WHERE state = 'leased' AND lease_expires_at <= now())
                                                                        AS expired_leases
FROM sms_outbox
GROUP BY kind, state;
COMMENT ON VIEW sms_queue_health IS 'Outbox depth by kind and state: how much is due now, the age of the oldest due row (seconds past its due time), the age of the oldest row, and leases past expiry.';

CREATE VIEW sms_failed_messages AS
SELECT m.id,
       m.final_at                  AS failed_at,
       m.delivery_status,
       m.provider,
       m.from_number,
       m.to_number,
       m.error_category,
       m.error_code,
       m.error_message,
       m.attempts,
       m.provider_sid,
       -- A message the provider accepted once cannot be requeued (a resend could double it).
       (m.provider_sid IS NULL)    AS requeueable,
       m.conversation_id,
       m.request_id,
       m.created_at
FROM sms_messages m
WHERE m.delivery_status IN ('failed', 'undelivered');
COMMENT ON VIEW sms_failed_messages IS 'Messages that finally failed (failed, undelivered) with their error; requeueable = never accepted by the provider, so `smsctl retry ID` may send it again.';

CREATE VIEW sms_stuck_work AS
-- Leased rows whose lease ran out: the dispatcher that held them died or hangs; any dispatcher
-- rescues them on its next claim, so rows that stay here mean no dispatcher is running.
SELECT 'lease_expired'::text                               AS reason,
       o.id                                                AS outbox_id,
       o.kind,
       o.message_id,
       o.alert_id,
       o.provider,
       o.lease_owner,
       o.attempts,
       o.last_error,
       extract(epoch FROM now() - o.lease_expires_at)::numeric(12, 3) AS stuck_seconds
FROM sms_outbox o
WHERE o.state = 'leased' AND o.lease_expires_at <= now()
UNION ALL
-- Messages accepted by the provider but with no final status after an hour (callbacks lost; the
-- status sweeper should ask the provider).
SELECT 'no_final_status',
       NULL,
       'send_sms',
       m.id,
       NULL,
       m.provider,
       NULL,
       m.attempts,
       NULL,
       extract(epoch FROM now() - m.submitted_at)::numeric(12, 3)
FROM sms_messages m
WHERE m.delivery_status IN ('queued', 'sending', 'sent')
  AND m.submitted_at < now() - interval '1 hour'
UNION ALL
-- Messages still pending an hour after creation (provider paused, retries, no dispatcher).
SELECT 'pending_too_long',
       o.id,
       'send_sms',
       m.id,
       NULL,
       m.provider,
       o.lease_owner,
       m.attempts,
       o.last_error,
       extract(epoch FROM now() - m.created_at)::numeric(12, 3)
FROM sms_messages m
LEFT JOIN sms_outbox o ON o.message_id = m.id
WHERE m.delivery_status = 'pending'
  AND m.created_at < now() - interval '1 hour';
COMMENT ON VIEW sms_stuck_work IS 'Work that is not moving: leases past expiry (lease_expired), accepted messages without a final status after 1 hour (no_final_status), and messages still pending after 1 hour (pending_too_long).';

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

-- A requeued message that fails again must alert again: the one-alert-per-message rule becomes one
-- alert per failure episode. Requeueing marks the earlier alert superseded (it stays as history).
ALTER TABLE sms_alerts ADD COLUMN superseded_at timestamptz;
COMMENT ON COLUMN sms_alerts.superseded_at IS 'Set when the message was requeued after this alert; a later final failure raises a new alert.';
DROP INDEX sms_alerts_one_per_message;
CREATE UNIQUE INDEX sms_alerts_one_per_message ON sms_alerts (message_id)
    WHERE kind = 'message_failed' AND superseded_at IS NULL;
