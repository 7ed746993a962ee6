-- 0006: send at the pace each sender may (issue 12, DESIGN section 11): a per-sender allowance shared
-- by every dispatcher, priority, scheduled sends, validity (`expired`) and quiet hours (`held`).

-- The pace of a sender, kept as a GCRA ("virtual scheduling") clock: pace_tat is the theoretical
-- time at which the sender has spent everything claimed so far at `mps` segments per second. A
-- claim may take `cost` segments when greatest(pace_tat, now) + cost/mps <= now + burst/mps, and
-- moves pace_tat by cost/mps. Any window of W seconds then holds at most burst + W * mps segments,
-- whichever dispatchers claimed them. The claim locks the sender row (FOR NO KEY UPDATE SKIP
-- LOCKED), so two claimers never spend the same allowance.
ALTER TABLE sms_senders
    ADD COLUMN mps numeric NOT NULL DEFAULT 1 CHECK (mps > 0 AND mps <= 10000),
    ADD COLUMN burst integer NOT NULL DEFAULT 1 CHECK (burst BETWEEN 1 AND 100000),
    ADD COLUMN pace_tat timestamptz NOT NULL DEFAULT '-infinity';
COMMENT ON COLUMN sms_senders.mps IS 'Segments per second this number may send, shared by every dispatcher (SENDER_DEFAULT_MPS when registered; smsctl senders set-rate).';
COMMENT ON COLUMN sms_senders.burst IS 'Segments this number may send at once after a quiet spell (default max(1, mps)).';
COMMENT ON COLUMN sms_senders.pace_tat IS 'Pace bookkeeping (GCRA): when everything claimed so far has been paid for at mps; -infinity when never used.';

-- Priority, schedule and validity of a message, as the API took them.
ALTER TABLE sms_messages
    ADD COLUMN priority text NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    ADD COLUMN send_at timestamptz,
    ADD COLUMN expires_at timestamptz;
COMMENT ON COLUMN sms_messages.priority IS 'high, normal or low: within a sender''s pace, higher goes first; high is never held for quiet hours.';
COMMENT ON COLUMN sms_messages.send_at IS 'Not sent before this time (POST send_at); null = at once.';
COMMENT ON COLUMN sms_messages.expires_at IS 'Not handed to a provider after this time: the message becomes expired instead; null = no limit.';

-- `expired`: a final status of rank 4, reached without a provider (no sid).
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_delivery_status_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_delivery_status_check
    CHECK (delivery_status IN ('pending', 'queued', 'sending', 'sent', 'delivered', 'undelivered',
                               'failed', 'canceled', 'read', 'expired'));
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_check1;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_check1
    CHECK (delivery_status IN ('pending', 'failed', 'canceled', 'expired') OR provider_sid IS NOT NULL);
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_check3;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_check3
    CHECK ((delivery_status IN ('delivered', 'undelivered', 'failed', 'canceled', 'read', 'expired'))
           = (final_at IS NOT NULL));
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_expired_unsent
    CHECK (delivery_status <> 'expired' OR provider_sid IS NULL);

ALTER TABLE sms_message_events DROP CONSTRAINT sms_message_events_event_type_check;
ALTER TABLE sms_message_events ADD CONSTRAINT sms_message_events_event_type_check
    CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep', 'reconcile_miss',
         'duplicate_send_detected', 'held', 'expired'));
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, reconcile_miss, duplicate_send_detected, sweep, held (quiet hours; detail.release_at), expired.';

-- What the claim needs of a send without reading sms_messages: the sender whose pace it spends,
-- its priority (0 high, 1 normal, 2 low), its cost in segments, and when it expires.
ALTER TABLE sms_outbox
    ADD COLUMN sender text,
    ADD COLUMN priority smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2),
    ADD COLUMN cost smallint NOT NULL DEFAULT 1 CHECK (cost BETWEEN 1 AND 49),
    ADD COLUMN expires_at timestamptz;
UPDATE sms_outbox o
SET sender = m.from_number, cost = m.segments
FROM sms_messages m
WHERE m.id = o.message_id;
ALTER TABLE sms_outbox ADD CONSTRAINT sms_outbox_sender_check
    CHECK ((kind = 'send_sms') = (sender IS NOT NULL));
COMMENT ON COLUMN sms_outbox.sender IS 'send_sms: the from number whose pace (sms_senders.mps) the send spends; null for other work.';
COMMENT ON COLUMN sms_outbox.priority IS '0 high, 1 normal, 2 low: the claim takes a sender''s due work in this order.';
COMMENT ON COLUMN sms_outbox.cost IS 'Segments the send spends of its sender''s allowance.';
COMMENT ON COLUMN sms_outbox.expires_at IS 'The message''s expires_at: past it, unsent work is expired, not sent.';

-- A number a queued message is sent from must have a pace: register any that is missing.
INSERT INTO sms_senders (phone_number, provider, enabled)
SELECT DISTINCT ON (o.sender) o.sender, o.provider, false
FROM sms_outbox o
WHERE o.sender IS NOT NULL
ORDER BY o.sender
ON CONFLICT (phone_number) DO NOTHING;

-- The claim reads each sender's due sends in priority order (sms_outbox_pace_idx); other work
-- (alerts) keeps a due index of its own, so neither scan passes over the other's rows.
DROP INDEX sms_outbox_due_idx;
CREATE INDEX sms_outbox_pace_idx ON sms_outbox (sender, priority, next_attempt_at)
    WHERE sender IS NOT NULL;
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at) WHERE sender IS NULL;
-- The claim visits senders in pace order (those owed longest first) and stops at its limit.
CREATE INDEX sms_senders_pace_idx ON sms_senders (pace_tat, phone_number);
-- The expiry sweep finds unsent work past its validity without reading the rest.
CREATE INDEX sms_outbox_expiry_idx ON sms_outbox (expires_at) WHERE expires_at IS NOT NULL;

CREATE OR REPLACE VIEW sms_failed_messages AS
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
       (m.provider_sid IS NULL AND m.delivery_status = 'failed') AS requeueable,
       m.conversation_id,
       m.request_id,
       m.created_at
FROM sms_messages m
WHERE m.delivery_status IN ('failed', 'undelivered', 'expired');
COMMENT ON VIEW sms_failed_messages IS 'Messages that finally failed (failed, undelivered, expired) with their error; requeueable = failed and never accepted by the provider, so `smsctl retry ID` may send it again.';

-- Each sender's pace and backlog, for DBAs: the allowance it has now (segments), when its next
-- segment is allowed, and what waits for it.
CREATE VIEW sms_sender_pace AS
SELECT s.phone_number,
       s.provider,
       s.enabled,
       s.mps,
       s.burst,
       greatest(0, floor(s.burst - extract(epoch FROM greatest(s.pace_tat, now()) - now()) * s.mps))::integer
                                                                           AS allowance_now,
       greatest(now(), greatest(s.pace_tat, now()) - make_interval(secs => ((s.burst - 1) / s.mps)::float8))
                                                                           AS next_segment_at,
       coalesce(b.due, 0)                                                  AS due,
       coalesce(b.due_segments, 0)                                         AS due_segments,
       coalesce(b.scheduled, 0)                                            AS scheduled,
       coalesce(b.leased, 0)                                               AS leased,
       b.oldest_due_seconds,
       -- How long the due backlog takes at this pace.
       (coalesce(b.due_segments, 0) / s.mps)::numeric(14, 1)               AS drain_seconds
FROM sms_senders s
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE o.state = 'ready' AND o.next_attempt_at <= now())        AS due,
           sum(o.cost) FILTER (WHERE o.state = 'ready' AND o.next_attempt_at <= now())     AS due_segments,
           count(*) FILTER (WHERE o.state = 'ready' AND o.next_attempt_at > now())         AS scheduled,
           count(*) FILTER (WHERE o.state = 'leased')                                      AS leased,
           extract(epoch FROM now() - min(o.next_attempt_at)
                   FILTER (WHERE o.state = 'ready' AND o.next_attempt_at <= now()))::numeric(12, 3)
                                                                                           AS oldest_due_seconds
    FROM sms_outbox o
    WHERE o.sender = s.phone_number
) b ON true;
COMMENT ON VIEW sms_sender_pace IS 'Per sender: its pace (mps, burst), the allowance it has now in segments, when the next segment is allowed, and its backlog (due rows and segments, scheduled, leased, oldest due age, seconds to drain at this pace).';
