-- The dispatcher's queries on sms_outbox (README, "Sent once").
--
-- Conventions, shared by every query here:
-- * `clock` CTE: `coalesce(%(now)s, now())`: production passes NULL and uses the database clock; tests
--   pass a time to move the clock without sleeping.
-- * A leased row's next_attempt_at equals its lease_expires_at, so sms_outbox_due_idx serves both
--   fresh work and the rescue of expired leases.
-- * Every change to a leased row is guarded by (lease_owner, attempts, state = 'leased'): a dispatcher
--   that lost its lease (paused, slow, partitioned) and comes back changes nothing.
-- * outbox.attempt_started_at set on a claimed row means an earlier attempt may have reached the
--   provider and was never resolved: the claimer reconciles before any resend.
-- * A message is found by its primary key and only then tested: `(m.delivery_status = 'pending')
--   IS TRUE` is the status test in a form no index can serve. Statistics taken while no message
--   was pending (the usual case: ANALYZE samples 30,000 rows) make "pending" look like one row,
--   and then sms_messages_status_idx looked cheaper than the primary key: with a backlog, every
--   claim and every record read all the pending messages (20,000 pending: 230 ms per claim).

-- name: outbox_wakeup_notify
-- Sent on its own connection after the enqueue committed, never inside it: NOTIFY takes a
-- cluster-wide lock at commit and so serializes every committing enqueue.
NOTIFY sms_outbox_wakeup;

-- name: outbox_lock_for_operator
-- Cancel locks the message's outbox row first, then the message: the dispatcher takes the same
-- order (claim the row, later update the message), so the two never deadlock. Holding this lock
-- makes a concurrent claim skip the row (SKIP LOCKED); a row already leased is reported.
SELECT id, state, attempt_started_at
FROM sms_outbox
WHERE message_id = %(id)s
FOR UPDATE;

-- name: outbox_depth
-- Depth and due age by kind and state, from the view (the outbox is small by design: finished
-- work leaves it, so counting it is cheap enough for every scrape).
SELECT kind, state, depth, due, oldest_due_seconds, expired_leases
FROM sms_queue_health
ORDER BY kind, state;

-- name: outbox_leases
-- Work held per dispatcher: how many rows each lease owner has, and how many of those expired.
SELECT lease_owner, count(*) AS leased,
       count(*) FILTER (WHERE lease_expires_at <= now()) AS expired,
       min(lease_expires_at) AS first_expiry
FROM sms_outbox
WHERE state = 'leased'
GROUP BY lease_owner
ORDER BY lease_owner;

-- name: outbox_claim_due
-- One statement takes up to %(limit)s due rows (fresh, retry-due, or with an expired lease) for
-- %(owner)s, and spends each sender's pace on the sends it takes (README, "Pace, schedules,
-- validity and quiet hours").
--
-- * Sends are taken per sender: `walk` finds and locks the senders that have allowance now and due
--   work (FOR NO KEY UPDATE SKIP LOCKED: two claimers never spend one allowance, and a claimer
--   passes a sender another one holds; NO KEY so enqueues are never blocked), round robin from
--   %(after)s; the answer's `walk_end` is where the next claim should start. For each, sms_outbox_pace_idx yields its due rows in priority order, as many as the allowance
--   could pay for; `admitted` keeps the prefix whose segments fit (a sender idle for long enough
--   may send one message larger than its burst). A sender's backlog therefore costs the claim one
--   short index scan, however deep it is, and never stands in front of another sender's work.
-- * Operator alerts are due by sms_outbox_due_idx, unpaced. Customer webhooks (deliver_webhook)
--   are never taken here: they have their own claim and capacity (dispatcher/webhooks.py).
-- * `paced` moves each sender's pace clock (GCRA) by what was taken: greatest(tat, now) + cost/mps.
-- * SKIP LOCKED lets concurrent claimers pass each other without waiting or sharing a row; a
--   paused provider's sends are skipped. The attempt number rises by one, except on a rescued row
--   whose attempt never started (its number is reused: no attempt was spent). The caller commits
--   at once. The message columns come along so that sending needs no further read.
-- * With %(start)s, a fresh send nothing would stop (`startable`) has its attempt started here
--   too ("attempt N started": outbox row, message attempts, event), committed with the lease: the
--   dispatcher calls it without a second commit (Work.started). Every other claimed send is
--   checked first and started by outbox_start_attempts, a row in doubt reconciled first.
WITH RECURSIVE clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
paused AS (
    SELECT coalesce(array_agg(p.provider), '{}') AS providers
    FROM sms_provider_pauses p
    WHERE p.paused_until > (SELECT now FROM clock)
),
walk (phone_number, wrapped, due, total, steps, mps, idle, tat, allowance) AS (
    -- The senders this claim takes from: only senders with work in the outbox are visited (a
    -- sender with nothing queued costs no claim anything, however many numbers are registered),
    -- one at a time in number order, round robin from %(after)s (the caller passes where its last
    -- claim stopped, `walk_end`, so every sender with due work gets its turn), wrapping round once.
    -- Each step seeks the next sender in sms_outbox_pace_idx (one index descent), then, if its
    -- allowance is not spent, counts its due sends (up to what its allowance and the claim could
    -- take: at most %(limit)s index entries; naming the three priorities makes it three range scans
    -- that end at the due time, never passing over leased or scheduled rows) and locks it (FOR NO
    -- KEY UPDATE SKIP LOCKED: a sender another claimer holds is passed, so no two claimers spend
    -- one allowance, and enqueues, which never lock a sender, are never blocked). The walk stops
    -- once the due sends it found fill the claim, or when it is back where it started. A sender's
    -- deep backlog costs its step no more than the claim can take.
    SELECT %(after)s::text, false, 0::bigint, 0::numeric, 0, NULL::numeric, NULL::boolean,
           NULL::timestamptz, NULL::int
    UNION ALL
    SELECT nx.phone_number, nx.wrapped, coalesce(t.due, 0), w.total + coalesce(t.due, 0),
           w.steps + 1, t.mps, t.idle, t.tat, t.allowance
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT z.phone_number, z.wrapped
        FROM ((SELECT o.sender AS phone_number, w.wrapped
               FROM sms_outbox o
               WHERE o.sender IS NOT NULL AND o.sender > w.phone_number
               ORDER BY o.sender
               LIMIT 1)
              UNION ALL
              (SELECT o.sender, true
               FROM sms_outbox o
               WHERE o.sender IS NOT NULL AND NOT w.wrapped
               ORDER BY o.sender
               LIMIT 1)) z
        LIMIT 1
    ) nx
    LEFT JOIN LATERAL (
        -- The sender's allowance, read from the row as locked.
        SELECT d.due, s.mps, s.pace_tat <= c.now AS idle, greatest(s.pace_tat, c.now) AS tat,
               floor(s.burst - extract(epoch FROM greatest(s.pace_tat, c.now) - c.now) * s.mps)::int
                   AS allowance
        FROM sms_senders s, clock c,
             LATERAL (
                 SELECT count(*) AS due
                 FROM (SELECT 1 FROM sms_outbox o, paused z
                       WHERE o.sender = s.phone_number
                         AND o.priority = ANY ('{0,1,2}'::smallint[])
                         AND o.next_attempt_at <= c.now
                         AND o.provider <> ALL (z.providers)
                       LIMIT least(greatest(floor(s.burst - extract(epoch FROM
                             greatest(s.pace_tat, c.now) - c.now) * s.mps), 1), %(limit)s)
                      ) t
             ) d
        WHERE s.phone_number = nx.phone_number
          AND s.pace_tat <= c.now + make_interval(secs => ((s.burst - 1) / s.mps)::float8)
          AND d.due > 0
        FOR NO KEY UPDATE OF s SKIP LOCKED
    ) t ON true
    WHERE w.total < %(limit)s AND NOT (nx.wrapped AND nx.phone_number > %(after)s::text)
),
ready AS MATERIALIZED (
    -- The senders the walk took (locked by it), with their allowance.
    SELECT phone_number, mps, idle, tat, allowance FROM walk WHERE due > 0
),
picked AS (
    SELECT r.phone_number, r.tat, r.mps, r.idle, r.allowance, x.id, x.cost, x.priority,
           x.rescued, sum(x.cost) OVER w AS spent, row_number() OVER w AS rn
    FROM ready r
    CROSS JOIN LATERAL (
        SELECT o.id, o.cost, o.priority, o.next_attempt_at, o.state = 'leased' AS rescued
        FROM sms_outbox o, paused z
        WHERE o.sender = r.phone_number AND o.priority = ANY ('{0,1,2}'::smallint[])
          AND o.next_attempt_at <= (SELECT now FROM clock)
          AND o.provider <> ALL (z.providers)
        ORDER BY o.priority, o.next_attempt_at
        LIMIT least(greatest(r.allowance, 1), %(limit)s)
        FOR UPDATE OF o SKIP LOCKED
    ) x
    WINDOW w AS (PARTITION BY r.phone_number ORDER BY x.priority, x.next_attempt_at, x.id)
),
admitted AS (
    -- The first %(limit)s in (priority, rn, tat) order. A rank filter rather than LIMIT, so that
    -- the plan's estimates do not depend on %(limit)s: then PostgreSQL keeps one generic plan of
    -- this statement per connection (a LIMIT known only to custom plans made every claim re-plan,
    -- ~1 ms, a third of its cost).
    SELECT *
    FROM (SELECT p.*, row_number() OVER (ORDER BY p.priority, p.rn, p.tat, p.phone_number) AS ord
          FROM picked p
          WHERE p.spent <= p.allowance OR (p.rn = 1 AND p.idle)) ranked
    WHERE ranked.ord <= %(limit)s
),
other AS (
    SELECT o.id, o.state = 'leased' AS rescued
    FROM sms_outbox o
    WHERE o.kind = 'deliver_alert' AND o.next_attempt_at <= (SELECT now FROM clock)
    ORDER BY o.next_attempt_at
    LIMIT greatest(%(limit)s - (SELECT count(*) FROM admitted), 0)
    FOR UPDATE OF o SKIP LOCKED
),
paced AS (
    UPDATE sms_senders s
    SET pace_tat = t.tat + make_interval(secs => (t.spent / s.mps)::float8)
    FROM (SELECT phone_number, min(tat) AS tat, sum(cost) AS spent
          FROM admitted GROUP BY phone_number) t
    WHERE s.phone_number = t.phone_number
      -- By the primary key, never a scan of every registered number.
      AND s.phone_number = ANY (ARRAY(SELECT phone_number FROM admitted))
),
due AS (
    SELECT id, rescued FROM admitted
    UNION ALL
    SELECT id, rescued FROM other
),
startable AS MATERIALIZED (
    -- Sends whose attempt starts in this statement, "attempt N started" committed with the
    -- claim: with %(start)s, the claimed sends the dispatcher would call at once whatever it
    -- checks (dispatcher.decision before_lookup and before_send): no earlier attempt in doubt, no
    -- sid known, the message pending, its provider configured here (%(providers)s), not expired,
    -- its recipient not opted out, and no quiet hours in force (%(quiet)s) unless high priority.
    -- Any other claimed send is checked first and started by outbox_start_attempts.
    SELECT a.id
    FROM admitted a
    -- The three switches in a fenced row, never folded into the plan: else a custom plan with
    -- %(start)s false looks cheaper than the generic one, and every claim is planned anew.
    CROSS JOIN (SELECT %(start)s::boolean AS start, %(providers)s::text[] AS providers,
                       %(quiet)s::boolean AS quiet
                OFFSET 0) k
    CROSS JOIN LATERAL (
        SELECT o.message_id, o.provider, o.expires_at
        FROM sms_outbox o
        WHERE o.id = a.id AND o.attempt_started_at IS NULL
        OFFSET 0
    ) o
    CROSS JOIN LATERAL (
        SELECT m.to_number, m.from_number
        FROM sms_messages m
        WHERE m.id = o.message_id
          AND (m.delivery_status = 'pending' AND m.provider_sid IS NULL) IS TRUE
        OFFSET 0
    ) m
    WHERE k.start
      AND o.provider = ANY (k.providers)
      AND (o.expires_at IS NULL OR o.expires_at > (SELECT now FROM clock))
      AND (NOT k.quiet OR a.priority = 0)
      AND NOT EXISTS (SELECT 1 FROM sms_suppressions s
                      WHERE s.phone_number = m.to_number
                        AND (s.sender_number IS NULL OR s.sender_number = m.from_number))
),
claimed AS (
    UPDATE sms_outbox o
    SET state = 'leased',
        lease_owner = %(owner)s,
        lease_expires_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        next_attempt_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        attempt_started_at = CASE WHEN o.id = ANY (ARRAY(SELECT id FROM startable))
                                  THEN clock.now ELSE o.attempt_started_at END,
        reconcile_misses = CASE WHEN o.id = ANY (ARRAY(SELECT id FROM startable))
                                THEN 0 ELSE o.reconcile_misses END,
        -- o.state is the row as locked above: 'leased' means rescued (an expired lease).
        attempts = CASE WHEN o.state = 'leased' AND o.attempt_started_at IS NULL
                        THEN greatest(o.attempts, 1) ELSE o.attempts + 1 END,
        updated_at = clock.now
    FROM clock
    -- By the primary key, whatever the plan (a generic plan, which knows no %(limit)s, joined
    -- `due` to a seq scan of the whole outbox).
    WHERE o.id = ANY (ARRAY(SELECT id FROM due))
    RETURNING o.id, o.kind, o.message_id, o.alert_id, o.provider, o.attempts,
              o.attempt_started_at, o.reconcile_misses, o.lease_expires_at,
              clock.now AS claimed_at, o.last_error_code, o.last_error_category, o.last_error,
              o.sender, o.expires_at
),
counted AS (
    -- As outbox_start_attempts does for the sends it starts.
    UPDATE sms_messages m
    SET attempts = c.attempts
    FROM claimed c
    WHERE m.id = c.message_id AND (m.delivery_status = 'pending') IS TRUE
      AND c.id = ANY (ARRAY(SELECT id FROM startable))
),
started_events AS (
    INSERT INTO sms_message_events (message_id, event_type, attempt, provider, occurred_at, detail)
    SELECT c.message_id, 'attempt_started', c.attempts, c.provider, c.claimed_at,
           jsonb_build_object('claimed_at', c.claimed_at)
    FROM claimed c
    WHERE c.id = ANY (ARRAY(SELECT id FROM startable))
    ORDER BY c.id
)
-- The columns are named as dispatcher.outbox.Work's fields: the row maps to it as it comes.
-- `started`: this statement started the attempt (startable); its earlier attempt_started_at was
-- NULL, so nothing is unresolved.
SELECT c.id, c.kind, c.attempts AS attempt, c.lease_expires_at, c.claimed_at, d.rescued,
       st.id IS NOT NULL AS started,
       CASE WHEN st.id IS NULL THEN c.attempt_started_at END AS unresolved_since,
       c.message_id, c.alert_id, c.provider,
       m.from_number, m.to_number, m.body, m.delivery_status, m.conversation_id, m.request_id,
       c.last_error_code, c.last_error_category, c.last_error, m.segments, m.provider_sid,
       c.reconcile_misses, m.priority, c.expires_at,
       (SELECT phone_number FROM walk ORDER BY steps DESC LIMIT 1) AS walk_end,
       -- The recipient opted out of this sender (or of all) since the message was queued.
       EXISTS (SELECT 1 FROM sms_suppressions s
               WHERE s.phone_number = m.to_number
                 AND (s.sender_number IS NULL OR s.sender_number = m.from_number)) AS suppressed
FROM claimed c
JOIN due d ON d.id = c.id
LEFT JOIN startable st ON st.id = c.id
-- One primary-key probe per claimed row (OFFSET 0 keeps it a nested loop in every plan).
LEFT JOIN LATERAL (
    SELECT m.from_number, m.to_number, m.body, m.delivery_status, m.conversation_id, m.request_id,
           m.segments, m.provider_sid, m.priority
    FROM sms_messages m
    WHERE m.id = c.message_id
    OFFSET 0
) m ON true
ORDER BY c.id;

-- name: outbox_start_attempts
-- "Attempt N started", committed before the provider call, for a whole batch in one statement.
-- Only rows still ours with an unexpired lease start; the caller sends exactly the ids returned.
-- messages.attempts follows the attempt number of the send actually started. The event keeps when
-- the row was claimed (detail.claimed_at): claim -> start is the time the batch waited for its
-- start, and the bench splits end-to-end latency by stage with it.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(claimed)s::timestamptz[])
        AS t(id, attempt, claimed_at)
),
started AS (
    UPDATE sms_outbox o
    SET attempt_started_at = clock.now, reconcile_misses = 0, updated_at = clock.now
    FROM input i, clock
    -- By the primary key (= ANY), whatever the plan: joined to `input` alone, the planner
    -- expected one leased row and scanned the whole outbox for each statement.
    WHERE o.id = ANY (%(ids)s::bigint[])
      AND o.id = i.id AND o.attempts = i.attempt AND o.lease_owner = %(owner)s
      AND o.state = 'leased' AND o.lease_expires_at > clock.now
    RETURNING o.id, o.message_id, o.provider, o.attempts, i.claimed_at
),
counted AS (
    UPDATE sms_messages m
    SET attempts = s.attempts
    FROM started s
    WHERE m.id = s.message_id AND (m.delivery_status = 'pending') IS TRUE
),
events AS (
    INSERT INTO sms_message_events (message_id, event_type, attempt, provider, occurred_at, detail)
    SELECT s.message_id, 'attempt_started', s.attempts, s.provider, clock.now,
           jsonb_build_object('claimed_at', s.claimed_at)
    FROM started s, clock
)
SELECT s.id FROM started s;

-- name: outbox_record_sent
-- Accepted sends (or sids adopted by reconciliation) for a batch in one transaction: the work leaves
-- the outbox (deleted: the hot table stays small), the message moves pending -> queued with its sid,
-- the conversation is touched, and the attempt and transition are recorded. A row that is no longer
-- ours is skipped whole. A pause of the provider ends: it just accepted a message.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
input AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(sids)s::text[],
                %(raw_statuses)s::text[], %(reconciled)s::boolean[])
         AS t(id, attempt, sid, raw_status, reconciled)
),
done AS (
    -- A sid that another message of ours already holds is never recorded twice (UNIQUE
    -- (provider, provider_sid) would fail the whole batch): that row stays leased, and whoever
    -- rescues it reconciles again.
    -- o.id = ANY: by the primary key, whatever the plan (joined to `input` alone, a plan that
    -- expected one leased row scanned the whole outbox, times the batch, ~100 ms per group).
    DELETE FROM sms_outbox o
    USING input i
    WHERE o.id = ANY (%(ids)s::bigint[])
      AND o.id = i.id AND o.attempts = i.attempt AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
      AND NOT EXISTS (SELECT 1 FROM sms_messages other
                      WHERE other.provider = o.provider AND other.provider_sid = i.sid
                        AND other.id <> o.message_id)
    RETURNING o.id, o.message_id, o.provider, i.attempt, i.sid, i.raw_status, i.reconciled
),
moved AS (
    UPDATE sms_messages m
    SET delivery_status = 'queued', provider_sid = d.sid, submitted_at = clock.now,
        updated_at = clock.now, attempts = greatest(m.attempts, d.attempt)
    FROM done d, clock
    WHERE m.id = d.message_id AND (m.delivery_status = 'pending') IS TRUE
    RETURNING m.id, m.conversation_id
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, clock.now)
    FROM (SELECT DISTINCT conversation_id FROM moved) x, clock
    WHERE c.id = x.conversation_id
),
resumed AS (
    DELETE FROM sms_provider_pauses p
    USING (SELECT DISTINCT provider FROM done) x
    WHERE p.provider = x.provider
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, attempt, from_status, to_status, provider, provider_sid,
         error_category, detail, occurred_at)
    SELECT d.message_id, CASE WHEN d.reconciled THEN 'reconciled' ELSE 'attempt_result' END,
           d.attempt, NULL, NULL, d.provider, d.sid, 'sent',
           jsonb_build_object('raw_status', d.raw_status), clock.now
    FROM done d, clock
    UNION ALL
    SELECT d.message_id, 'transition', d.attempt, 'pending', 'queued', d.provider, d.sid,
           NULL, NULL, clock.now
    FROM done d JOIN moved mv ON mv.id = d.message_id, clock
)
SELECT d.id, d.message_id, d.sid, d.attempt, (mv.id IS NOT NULL) AS moved, mv.conversation_id
FROM done d
LEFT JOIN moved mv ON mv.id = d.message_id;

-- name: outbox_reschedule_many
-- Failed attempts that may run again (retryable, ambiguous, config, undelivered alert), one row or
-- the attempts of many slots (dispatcher.recorder groups them, as outbox_record_sent does for
-- accepted sends): each row goes back to ready at clock + its delay, if still ours. A give-back
-- of 1 returns the attempt (config errors do not burn the message's attempts; messages.attempts
-- follows). `unresolved` keeps attempt_started_at so the next claimer reconciles an ambiguous
-- attempt before resending; otherwise it is cleared. Rows by the primary key (= ANY).
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
input AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(delays)s::float8[],
                %(give_backs)s::int[], %(unresolved)s::boolean[], %(error_codes)s::text[],
                %(error_categories)s::text[], %(error_messages)s::text[])
         AS t(id, attempt, delay_seconds, give_back, unresolved, error_code, error_category,
              error_message)
),
moved AS (
    UPDATE sms_outbox o
    SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
        next_attempt_at = clock.now + make_interval(secs => greatest(i.delay_seconds, 0)),
        attempts = o.attempts - i.give_back,
        attempt_started_at = CASE WHEN i.unresolved THEN o.attempt_started_at END,
        last_error_code = i.error_code, last_error_category = i.error_category,
        last_error = i.error_message, updated_at = clock.now
    FROM input i, clock
    WHERE o.id = ANY (%(ids)s::bigint[]) AND o.id = i.id AND o.attempts = i.attempt
      AND o.lease_owner = %(owner)s AND o.state = 'leased'
    RETURNING o.id, o.message_id, o.provider, o.attempts, o.next_attempt_at, i.attempt AS tried,
              i.give_back, i.error_code, i.error_category, i.error_message
),
counted AS (
    UPDATE sms_messages m
    SET attempts = least(m.attempts, r.attempts)
    FROM moved r
    WHERE m.id = r.message_id AND r.give_back > 0 AND (m.delivery_status = 'pending') IS TRUE
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, attempt, provider, error_code, error_category, detail, occurred_at)
    SELECT r.message_id, 'attempt_result', r.tried, r.provider, r.error_code, r.error_category,
           jsonb_build_object('reason', r.error_message,
                              'next_attempt_at', r.next_attempt_at,
                              'attempt_given_back', r.give_back > 0),
           clock.now
    FROM moved r, clock
    WHERE r.message_id IS NOT NULL AND r.error_category IS NOT NULL
    ORDER BY r.id
)
SELECT r.id, r.next_attempt_at FROM moved r;

-- name: outbox_finish
-- Work that ends here without a send being recorded (final failure, delivered or abandoned alert):
-- delete the row if it is still ours, with an attempt_result event when a category is given. The
-- caller does the rest (raise_final_failure, alert state) in the same transaction, and only when a
-- row came back.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
done AS (
    DELETE FROM sms_outbox o
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
    RETURNING o.id, o.message_id, o.alert_id, o.provider
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, attempt, provider, error_code, error_category, detail, occurred_at)
    SELECT d.message_id, 'attempt_result', %(attempt)s, d.provider, %(error_code)s,
           %(error_category)s, jsonb_build_object('reason', %(error_message)s::text), clock.now
    FROM done d, clock
    WHERE d.message_id IS NOT NULL AND %(error_category)s::text IS NOT NULL
)
SELECT d.id, d.message_id, d.alert_id FROM done d;

-- name: outbox_drop
-- Claimed send work whose message is no longer pending (canceled, or already moved on): it leaves
-- the outbox unsent, batch-wise, if still ours.
DELETE FROM sms_outbox o
USING unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS i(id, attempt)
WHERE o.id = ANY (%(ids)s::bigint[]) AND o.id = i.id AND o.attempts = i.attempt
  AND o.lease_owner = %(owner)s AND o.state = 'leased'
RETURNING o.id;

-- name: outbox_release
-- Graceful stop: hand claimed rows back. A row whose attempt never started in this lease gets its
-- attempt back and is due at once; a row whose attempt started (the call may have reached the
-- provider) keeps attempt_started_at, so its next claimer reconciles first, and waits
-- %(settle_seconds)s for a request still in flight to land at the provider.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
)
UPDATE sms_outbox o
SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
    attempts = CASE WHEN i.started THEN o.attempts ELSE o.attempts - 1 END,
    next_attempt_at = CASE WHEN i.started
                           THEN clock.now + make_interval(secs => %(settle_seconds)s::float8)
                           ELSE clock.now END,
    updated_at = clock.now
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(started)s::boolean[])
     AS i(id, attempt, started),
     clock
WHERE o.id = ANY (%(ids)s::bigint[]) AND o.id = i.id AND o.attempts = i.attempt
  AND o.lease_owner = %(owner)s AND o.state = 'leased'
RETURNING o.id;

-- name: outbox_copy_owners
-- Whose the copies a reconciliation lookup found may be, read in ONE statement (one snapshot): a
-- sibling that adopts a copy deletes its outbox row and takes the sid in one commit, so two reads
-- could miss it both ways (not yet a holder in the first, no longer a rival in the second) and adopt
-- its copy; the write's guard then refused it, and the row waited out its lease.
-- `taken`: the sids that are not ours to adopt: one that another message of ours holds (UNIQUE
-- (provider, provider_sid) answers), or a stray copy already known to carry another message's id
-- (sms_message_events_duplicate_once answers). Two identical texts to one recipient, or two
-- SignalWire messages to one recipient in one window, stay apart.
-- Reconciliation without a body to compare (SignalWire) cannot tell our copy from another of our
-- messages to the same recipient whose call is in flight and not yet recorded. `since`: when the
-- earliest such call started, so younger copies are left alone until it is over. "In flight" is a
-- leased row whose attempt started within its current lease (a row leased only to be looked up has
-- an older attempt_started_at). sms_outbox is small; the join is by primary key.
-- `rivals`: when every such message's attempt that is in flight or unresolved started (its row
-- still has attempt_started_at: a recorded sid would have removed it), to tell whose a copy is
-- (dispatcher.decision.after_lookup); with %(same_body)s (a provider that compares bodies) only
-- messages with this body, the only ones whose copies the lookup can return.
WITH taken AS (
    SELECT s.sid
    FROM unnest(%(sids)s::text[]) AS s(sid)
    WHERE EXISTS (SELECT 1 FROM sms_messages m
                  WHERE m.provider = %(provider)s AND m.provider_sid = s.sid
                    AND m.id <> %(message_id)s)
       OR EXISTS (SELECT 1 FROM sms_message_events e
                  WHERE e.event_type = 'duplicate_send_detected' AND e.provider = %(provider)s
                    AND e.provider_sid = s.sid AND e.message_id <> %(message_id)s)
)
SELECT (SELECT coalesce(array_agg(t.sid), '{}') FROM taken t) AS taken,
       min(o.attempt_started_at) FILTER (
           WHERE o.state = 'leased' AND o.attempt_started_at
                 >= o.lease_expires_at - make_interval(secs => %(lease_seconds)s::float8)
       ) AS since,
       coalesce(array_agg(o.attempt_started_at ORDER BY o.attempt_started_at), '{}') AS rivals
FROM sms_outbox o
JOIN sms_messages m ON m.id = o.message_id
WHERE o.sender = %(from_number)s AND o.provider = %(provider)s
  AND o.message_id <> %(message_id)s AND o.attempt_started_at IS NOT NULL
  AND m.from_number = %(from_number)s AND m.to_number = %(to_number)s
  AND (NOT %(same_body)s::boolean OR m.body = %(body)s);

-- name: outbox_await_copy
-- An unresolved attempt that is not looked up yet (inside its settle window) or whose lookup found
-- nothing while more lookups are due: back to ready at clock + delay with its attempt given back
-- (no provider call was made), attempt_started_at kept so the next claimer looks again, and the
-- miss counted (%(missed)s). A miss is a 'reconcile_miss' event in the message's history.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
moved AS (
    UPDATE sms_outbox o
    SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
        next_attempt_at = clock.now + make_interval(secs => %(delay_seconds)s::float8),
        attempts = greatest(o.attempts - 1, 0),
        reconcile_misses = o.reconcile_misses + CASE WHEN %(missed)s::boolean THEN 1 ELSE 0 END,
        updated_at = clock.now
    FROM clock
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased' AND o.attempt_started_at IS NOT NULL
    RETURNING o.id, o.message_id, o.provider, o.attempts, o.reconcile_misses, o.next_attempt_at
),
events AS (
    INSERT INTO sms_message_events
        (message_id, event_type, attempt, provider, detail, occurred_at)
    SELECT r.message_id, 'reconcile_miss', r.attempts, r.provider,
           jsonb_build_object('lookup', r.reconcile_misses, 'next_lookup_at', r.next_attempt_at),
           clock.now
    FROM moved r, clock
    WHERE %(missed)s::boolean
)
SELECT r.id, r.next_attempt_at FROM moved r;

-- name: outbox_hold
-- Quiet hours in the recipient's time zone: the send goes back to ready until %(until)s unsent.
-- Its attempt is returned (no call was made), an attempt in doubt is settled (the lookups that
-- came before concluded it never reached the provider), the segments the claim spent go back to
-- the sender's pace, and a `held` event says until when. Guarded like every leased-row change.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
held AS (
    UPDATE sms_outbox o
    SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
        next_attempt_at = %(until)s::timestamptz, attempts = greatest(o.attempts - 1, 0),
        attempt_started_at = NULL, reconcile_misses = 0, updated_at = clock.now
    FROM clock
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
    RETURNING o.id, o.message_id, o.provider, o.sender, o.cost
),
refund AS (
    UPDATE sms_senders s
    SET pace_tat = s.pace_tat - make_interval(secs => (h.cost / s.mps)::float8)
    FROM held h
    WHERE s.phone_number = h.sender AND s.pace_tat > '-infinity'
),
events AS (
    INSERT INTO sms_message_events (message_id, event_type, provider, detail, occurred_at)
    SELECT h.message_id, 'held', h.provider,
           jsonb_build_object('reason', %(reason)s::text, 'release_at', %(until)s::timestamptz),
           clock.now
    FROM held h, clock
)
SELECT h.id FROM held h;

-- name: outbox_expire_due
-- The expiry sweep: unsent work past its message's validity leaves the outbox (sms_outbox_expiry_idx),
-- up to %(limit)s rows; the caller expires each message in the same transaction. Only ready rows
-- with no attempt in doubt: a leased row belongs to a dispatcher (which expires it before any
-- call), and an attempt that may have reached the provider is looked up first.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
victims AS (
    SELECT o.id
    FROM sms_outbox o, clock
    WHERE o.expires_at <= clock.now AND o.state = 'ready' AND o.attempt_started_at IS NULL
      AND o.kind = 'send_sms'
    ORDER BY o.expires_at
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
)
DELETE FROM sms_outbox o
USING victims v
WHERE o.id = v.id
RETURNING o.message_id, o.expires_at;

-- name: outbox_suppress
-- The recipient opted out after the message was queued (sms_suppressions): the claimed send leaves
-- the outbox unsent if still ours, the message goes pending -> canceled with error category
-- `suppressed`, the segments the claim spent go back to the sender's pace, and the timeline gets a
-- `suppressed` event and the transition. The message is never handed to a provider.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
done AS (
    DELETE FROM sms_outbox o
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
    RETURNING o.message_id, o.provider, o.sender, o.cost
),
moved AS (
    UPDATE sms_messages m
    SET delivery_status = 'canceled', error_code = 'recipient_opted_out',
        error_category = 'suppressed',
        error_message = 'the recipient opted out of this sender before it was sent',
        final_at = clock.now, updated_at = clock.now
    FROM done d, clock
    WHERE m.id = d.message_id AND (m.delivery_status = 'pending') IS TRUE
    RETURNING m.id, m.conversation_id, m.provider
),
refund AS (
    UPDATE sms_senders s
    SET pace_tat = s.pace_tat - make_interval(secs => (d.cost / s.mps)::float8)
    FROM done d
    WHERE s.phone_number = d.sender AND s.pace_tat > '-infinity'
),
touched AS (
    UPDATE sms_conversations c
    SET last_message_at = greatest(c.last_message_at, clock.now)
    FROM moved, clock
    WHERE c.id = moved.conversation_id
),
logged AS (
    INSERT INTO sms_message_events
        (message_id, event_type, from_status, to_status, provider, error_code, error_category,
         occurred_at)
    SELECT moved.id, e.event_type, e.from_status, 'canceled', moved.provider,
           'recipient_opted_out', 'suppressed', clock.now
    FROM moved, clock,
         (VALUES ('suppressed', NULL), ('transition', 'pending')) AS e(event_type, from_status)
)
SELECT d.message_id, (SELECT count(*) FROM moved) AS canceled FROM done d;

-- name: outbox_retrying
-- Sends that failed at least once and wait for another attempt (still pending: cancelable, as
-- operations.cancel judges), the ones that have waited longest first; for the ops console. The
-- outbox is small by design, so this reads it whole.
SELECT o.message_id, o.provider, o.state, o.attempts, o.next_attempt_at, o.last_error_code,
       o.last_error_category, o.last_error, m.to_number, m.from_number, m.created_at
FROM sms_outbox o
JOIN sms_messages m ON m.id = o.message_id
WHERE o.kind = 'send_sms' AND o.last_error IS NOT NULL
ORDER BY o.created_at, o.id
LIMIT %(limit)s;
