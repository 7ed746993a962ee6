-- sms_senders: the numbers we may send from.

-- name: senders_lock
-- Two API processes starting at once register and pick the default one after the other, so the
-- partial unique index on is_default never sees a transient second default.
SELECT pg_advisory_xact_lock(7715002);

-- name: senders_register
-- Start-up registration of a configured number, at SENDER_DEFAULT_MPS when it is new. On conflict
-- only the provider follows the configuration: an operator who disabled the number or set its
-- rate (smsctl senders set-rate) keeps that across restarts.
INSERT INTO sms_senders (phone_number, provider, mps, burst)
VALUES (%(phone_number)s, %(provider)s, %(mps)s, %(burst)s)
ON CONFLICT (phone_number) DO UPDATE
SET provider = EXCLUDED.provider, updated_at = now()
WHERE sms_senders.provider <> EXCLUDED.provider;

-- name: senders_clear_default
-- Clear the old default before setting the new one (a partial unique index cannot be deferred).
UPDATE sms_senders
SET is_default = false, updated_at = now()
WHERE is_default
  AND phone_number <> %(phone_number)s;

-- name: senders_set_default
-- Guarded on enabled, as the CHECK (NOT is_default OR enabled) demands; returns the row it set.
UPDATE sms_senders
SET is_default = true, updated_at = now()
WHERE phone_number = %(phone_number)s
  AND enabled
RETURNING phone_number;

-- name: senders_lookup
-- One sender by its number (primary key).
SELECT phone_number, provider, enabled, is_default
FROM sms_senders
WHERE phone_number = %(phone_number)s;

-- name: senders_default
-- The default sender (at most one row: partial unique index sms_senders_one_default).
SELECT phone_number, provider, enabled, is_default
FROM sms_senders
WHERE is_default;

-- name: senders_list
-- Every sender with its pace and backlog, the default first. sms_sender_pace counts each
-- sender's outbox rows through sms_outbox_pace_idx: cheap for a handful of senders.
SELECT s.phone_number, s.provider, s.enabled, s.is_default, p.mps, p.burst, p.allowance_now,
       p.next_segment_at, p.due, p.due_segments, p.scheduled, p.leased, p.oldest_due_seconds,
       p.drain_seconds, s.created_at, s.updated_at
FROM sms_senders s
JOIN sms_sender_pace p USING (phone_number)
ORDER BY s.is_default DESC, s.phone_number;

-- name: senders_add
-- A new sender, enabled, at the given pace; an existing number is left untouched and no row
-- comes back.
INSERT INTO sms_senders (phone_number, provider, mps, burst)
VALUES (%(phone_number)s, %(provider)s, %(mps)s, %(burst)s)
ON CONFLICT (phone_number) DO NOTHING
RETURNING phone_number;

-- name: senders_set_rate
-- An operator's new pace for a number. What the sender already owes (pace_tat ahead of now, in
-- segments at the old rate) carries over in segments, so a raised rate helps at once and a
-- lowered one cannot be dodged. SET reads the old mps; the CHECK refuses mps <= 0 or burst < 1
-- whatever the caller checked. The row lock waits for a claim holding the sender (FOR NO KEY
-- UPDATE), so no claim spends at a rate half changed. No row: no such sender.
UPDATE sms_senders
SET pace_tat = CASE WHEN pace_tat > now()
                    THEN now() + (pace_tat - now()) * (mps / %(mps)s::numeric)::float8
                    ELSE pace_tat END,
    mps = %(mps)s,
    burst = %(burst)s,
    updated_at = now()
WHERE phone_number = %(phone_number)s
RETURNING phone_number, mps, burst;

-- name: senders_disable
-- Disabling the default sender also clears its default flag (CHECK NOT is_default OR enabled).
-- Guarded on enabled: a second disable returns no row.
UPDATE sms_senders
SET enabled = false, is_default = false, updated_at = now()
WHERE phone_number = %(phone_number)s AND enabled
RETURNING phone_number;

-- name: senders_refund
-- Segments a claim spent on a send that was then not made (expired, held for quiet hours) go back
-- to the sender's pace: as if the claim had never taken them, which keeps every window within it.
UPDATE sms_senders
SET pace_tat = pace_tat - make_interval(secs => (%(segments)s / mps)::float8)
WHERE phone_number = %(phone_number)s
  AND pace_tat > '-infinity';

-- name: senders_next_allowance
-- How long until the first sender with due work has a segment of allowance again (negative: one
-- has it now, e.g. a claimer held its lock). The dispatcher sleeps that long after a claim that
-- came back short, rather than the whole poll interval. NULL: no due send is waiting.
-- Only senders with work in the outbox are read (one sms_outbox_pace_idx descent each, as the
-- claim's walk): registered numbers with nothing queued cost nothing.
WITH RECURSIVE clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
present (sender, seconds) AS (
    SELECT ''::text, NULL::float8
    UNION ALL
    SELECT nx.sender,
           (SELECT extract(epoch FROM greatest(s.pace_tat, c.now)
                           - make_interval(secs => ((s.burst - 1) / s.mps)::float8) - c.now)
            FROM sms_senders s, clock c
            WHERE s.phone_number = nx.sender
              AND EXISTS (SELECT 1 FROM sms_outbox o
                          WHERE o.sender = s.phone_number
                            AND o.priority = ANY ('{0,1,2}'::smallint[])
                            AND o.next_attempt_at <= c.now
                            AND NOT EXISTS (SELECT 1 FROM sms_provider_pauses p
                                            WHERE p.provider = o.provider
                                              AND p.paused_until > c.now)))::float8
    FROM present w
    CROSS JOIN LATERAL (SELECT o.sender
                        FROM sms_outbox o
                        WHERE o.sender IS NOT NULL AND o.sender > w.sender
                        ORDER BY o.sender
                        LIMIT 1) nx
)
SELECT min(seconds) AS seconds FROM present;
