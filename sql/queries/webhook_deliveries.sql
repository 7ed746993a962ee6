-- sms_webhook_deliveries: status webhooks to customer endpoints, and their outbox rows
-- (sms_outbox kind deliver_webhook). webhook_deliveries_fan_out makes both from the message
-- events after they committed (migration 0016), the opt-out triggers of 0008 from suppressions;
-- the rest are the webhook loop's (dispatcher/webhooks.py). They touch only deliver_webhook rows,
-- through their own index (sms_outbox_webhook_due_idx), so they never meet the SMS claim's rows;
-- the same conventions hold as in outbox.sql: the `clock` CTE (tests inject the time), every
-- change to a leased row guarded by (lease_owner, attempts, state = 'leased').

-- name: webhook_deliveries_mark
-- The first statement of a fan-out step's transaction (migrations 0016 and 0021): the fan-out
-- cursor's row, locked SKIP LOCKED, only when there is something to do (a lock is a write, and
-- its commit a WAL flush): an enabled endpoint that follows the shared fan-out (or is to fall
-- behind it, parked) and a committed event waiting past the cursor; an endpoint to catch up
-- (behind and no longer parked); or, at most once a second, the cursor to move up to xmin (no
-- endpoint wants the events). No row: there
-- is nothing to do, or another dispatcher is fanning out; `behind` says whether an endpoint is
-- to catch up (else the step skips webhook_deliveries_catch_up). The statements that follow in the same
-- transaction (webhook_deliveries_fan_out, webhook_deliveries_catch_up) start after the lock was
-- taken, so they read every endpoint as the previous holder of the lock left it. "Waiting" is the
-- first such event in index order, not an EXISTS: PostgreSQL drops an EXISTS' ORDER BY and LIMIT,
-- and may then scan the day's partition from its start for a match that sits at its end.
SELECT f.xact, s.behind
FROM sms_webhook_fanout f
CROSS JOIN (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
                   EXISTS (SELECT 1 FROM sms_webhook_endpoints w
                           WHERE w.enabled AND w.behind_xact IS NULL) AS wanted,
                   EXISTS (SELECT 1 FROM sms_webhook_endpoints w
                           WHERE w.enabled AND w.behind_xact IS NOT NULL
                             AND (w.parked_until IS NULL OR w.parked_until <= now())) AS behind
           ) s
WHERE f.id
  AND (s.behind
       OR CASE WHEN s.wanted
               THEN (
                   SELECT e.id
                   FROM sms_message_events e
                   WHERE (e.xact, e.id) > (f.xact, f.event_id) AND e.xact < s.xmin
                     AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
                     AND (e.event_type = 'received'
                          OR (e.event_type IN ('transition', 'canceled')
                              AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered',
                                                  'failed', 'expired', 'canceled', 'read')))
                   ORDER BY e.xact, e.id
                   LIMIT 1) IS NOT NULL
               ELSE f.xact < s.xmin AND f.updated_at < now() - interval '1 second' END)
FOR UPDATE OF f SKIP LOCKED;

-- name: webhook_deliveries_fan_out
-- One step of the shared fan-out after commit (migration 0016 explains the cursor), in the
-- transaction where webhook_deliveries_mark locked the cursor: up to %(limit)s webhook-worthy events
-- past the cursor, of transactions that have ended (xact below the xmin of this statement's
-- snapshot), become deliveries and their outbox rows for the endpoints that follow the shared
-- fan-out, and the cursor moves past them, all in this one statement: a crash repeats or loses
-- nothing. With no such endpoint the events are not read; the cursor just moves to xmin.
-- Parked endpoints (migration 0021) get no delivery: one not behind yet falls behind here, at
-- the position this step starts from (`fell`), and its catch-up makes its deliveries once it is
-- no longer parked. The same snapshot decides who follows and who falls, and every endpoint's
-- position is as the previous holder of the lock left it (this statement started after the lock).
-- What becomes a webhook, and its body, are those of the trigger of 0008/0013 it replaces:
-- * 'transition' rows to a status of DESIGN section 13 (`sending` and `pending` are not events
--   of the contract);
-- * 'canceled' rows (messages_cancel records pending -> canceled that way, without a transition
--   row), unless the same transaction also wrote the transition, so a cancel is one event;
-- * 'received' rows (inbound messages), to the key that sent last in the conversation, which
--   messages_receive stores as the inbound message's api_key_id.
-- A message goes to the endpoints of the key that created it, filtered by `events`; the body
-- (sms_webhook_message_body) has the message row as it is now (status and previous_status are
-- the event's). Events are read through sms_message_events_fanout_idx (xact, id), whose
-- predicate the WHERE below repeats word for word; deliveries are made in event id order.
WITH mark AS MATERIALIZED (
    SELECT f.xact, f.event_id, s.xmin, s.wanted
    FROM sms_webhook_fanout f
    CROSS JOIN (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
                       EXISTS (SELECT 1 FROM sms_webhook_endpoints w
                               WHERE w.enabled AND w.behind_xact IS NULL
                                 AND (w.parked_until IS NULL OR w.parked_until <= now()))
                           AS wanted
               ) s
    WHERE f.id
),
batch AS MATERIALIZED (
    SELECT e.id, e.xact, e.message_id, e.event_type, e.from_status, e.to_status, e.occurred_at
    FROM mark c
    CROSS JOIN LATERAL (
        SELECT e.id, e.xact, e.message_id, e.event_type, e.from_status, e.to_status,
               e.occurred_at
        FROM sms_message_events e
        WHERE (e.xact, e.id) > (c.xact, c.event_id) AND e.xact < c.xmin
          AND e.xact IS NOT NULL AND e.message_id IS NOT NULL
          AND (e.event_type = 'received'
               OR (e.event_type IN ('transition', 'canceled')
                   AND e.to_status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed',
                                       'expired', 'canceled', 'read')))
        ORDER BY e.xact, e.id
        LIMIT %(limit)s
    ) e
    WHERE c.wanted
),
events AS (
    SELECT b.id, b.message_id, b.occurred_at, b.from_status AS previous_status,
           b.to_status AS status,
           CASE b.event_type WHEN 'received' THEN 'message.received'
                             ELSE 'message.' || b.to_status END AS type
    FROM batch b
    -- A cancel looks up its message's other events (sms_message_events_message_idx); OFFSET 0
    -- keeps that a probe per cancel: without it the planner may hash the lookup instead, which
    -- reads every transition to canceled there is.
    WHERE b.event_type <> 'canceled'
       OR (b.to_status = 'canceled'
           AND NOT EXISTS (SELECT 1 FROM sms_message_events t
                           WHERE t.message_id = b.message_id AND t.xact = b.xact
                             AND t.event_type = 'transition' AND t.to_status = 'canceled'
                           OFFSET 0))
),
made AS (
    INSERT INTO sms_webhook_deliveries
        (endpoint_id, event_type, message_id, payload, occurred_at)
    SELECT w.id, ev.type, (m.r).id,
           sms_webhook_message_body(ev.type, ev.occurred_at, ev.status, ev.previous_status, m.r),
           ev.occurred_at
    FROM events ev
    -- One primary-key probe per event: a prepared statement's generic plan cannot tell the
    -- batch's size, and a join planned for a large one (a scan of sms_messages) would run for
    -- every step that finds one event. OFFSET 0 keeps the subquery a nested-loop probe. The
    -- whole row (r) is what the body function takes.
    CROSS JOIN LATERAL (
        SELECT m AS r FROM sms_messages m WHERE m.id = ev.message_id OFFSET 0
    ) m
    JOIN sms_webhook_endpoints w
      ON w.api_key_id = (m.r).api_key_id AND w.enabled AND w.behind_xact IS NULL
     AND (w.parked_until IS NULL OR w.parked_until <= now())
     AND (w.events = '{}' OR ev.type = ANY (w.events))
    ORDER BY ev.id, w.id
    RETURNING id
),
queued AS (
    INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)
    SELECT 'deliver_webhook', made.id, now()
    FROM made
    RETURNING id
),
fell AS (
    -- Parked endpoints that followed the shared fan-out stop here: their events from this step's
    -- start on are their catch-up's. By id, so a release committed since this statement's
    -- snapshot does not undo it (the catch-up then starts at once).
    UPDATE sms_webhook_endpoints w
    SET behind_xact = c.xact, behind_event_id = c.event_id
    FROM mark c
    WHERE w.id IN (SELECT p.id FROM sms_webhook_endpoints p
                   WHERE p.enabled AND p.behind_xact IS NULL AND p.parked_until > now())
    RETURNING w.id
),
tail AS (
    SELECT b.xact, b.id FROM batch b ORDER BY b.xact DESC, b.id DESC LIMIT 1
),
target AS (
    -- A full batch: up to its last event (the caller runs again). Otherwise every event below
    -- xmin has been read: up to xmin.
    SELECT CASE WHEN n.full_batch THEN l.xact ELSE c.xmin END AS xact,
           CASE WHEN n.full_batch THEN l.id ELSE 0 END AS event_id
    FROM mark c
    CROSS JOIN (SELECT count(*) >= %(limit)s AS full_batch FROM batch) n
    LEFT JOIN tail l ON true
),
moved AS (
    -- Never backwards (a cursor is never moved past the xmin of its mover's snapshot, and this
    -- one's is at least as late).
    UPDATE sms_webhook_fanout f
    SET xact = n.xact, event_id = n.event_id, updated_at = now()
    FROM target n
    WHERE f.id AND (n.xact, n.event_id) > (f.xact, f.event_id)
    RETURNING f.id
)
SELECT (SELECT count(*) FROM batch) AS events,
       (SELECT count(*) FROM made) AS deliveries,
       (SELECT count(*) FROM fell) AS fell_behind;

-- name: webhook_deliveries_catch_up
-- One step of one endpoint's catch-up (migration 0021), in the transaction where
-- webhook_deliveries_mark locked the cursor, after webhook_deliveries_fan_out: the first endpoint
-- (by id) that is behind and no longer parked, locked, gets the deliveries of up to %(limit)s
-- webhook-worthy events past its position and up to the shared cursor (its key's, filtered by
-- its `events`; made as the shared fan-out makes them, due now), and its position moves past
-- them; when they reach the shared cursor it follows the shared fan-out again (position null).
-- The events below the shared cursor are all committed (0016), and no shared step can run
-- meanwhile (the lock), so none is made twice or skipped. Other keys' events are read and left:
-- a batch is %(limit)s events read, not made.
WITH cursor_at AS (
    SELECT f.xact, f.event_id FROM sms_webhook_fanout f WHERE f.id
),
ep AS MATERIALIZED (
    SELECT w.id, w.api_key_id, w.events, w.behind_xact, w.behind_event_id
    FROM sms_webhook_endpoints w
    WHERE w.enabled AND w.behind_xact IS NOT NULL
      AND (w.parked_until IS NULL OR w.parked_until <= now())
    ORDER BY w.id
    LIMIT 1
    FOR NO KEY UPDATE OF w
),
batch AS MATERIALIZED (
    SELECT e.*
    FROM ep
    CROSS JOIN cursor_at c
    CROSS JOIN LATERAL sms_webhook_events_between(ep.behind_xact, ep.behind_event_id,
                                                  c.xact, c.event_id, %(limit)s) e
),
made AS (
    INSERT INTO sms_webhook_deliveries
        (endpoint_id, event_type, message_id, payload, occurred_at)
    SELECT ep.id, ev.type, (m.r).id,
           sms_webhook_message_body(ev.type, ev.occurred_at, ev.status, ev.previous_status, m.r),
           ev.occurred_at
    FROM batch ev
    CROSS JOIN ep
    CROSS JOIN LATERAL (
        SELECT m AS r FROM sms_messages m WHERE m.id = ev.message_id OFFSET 0
    ) m
    WHERE ev.webhook AND (m.r).api_key_id = ep.api_key_id
      AND (ep.events = '{}' OR ev.type = ANY (ep.events))
    ORDER BY ev.id
    RETURNING id
),
queued AS (
    INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)
    SELECT 'deliver_webhook', made.id, now()
    FROM made
    RETURNING id
),
tail AS (
    SELECT b.xact, b.id FROM batch b ORDER BY b.xact DESC, b.id DESC LIMIT 1
),
moved AS (
    UPDATE sms_webhook_endpoints w
    SET behind_xact = CASE WHEN n.full_batch THEN l.xact END,
        behind_event_id = CASE WHEN n.full_batch THEN l.id END
    FROM ep
    CROSS JOIN (SELECT count(*) >= %(limit)s AS full_batch FROM batch) n
    LEFT JOIN tail l ON true
    WHERE w.id = ep.id
    RETURNING w.id
)
SELECT (SELECT count(*) FROM ep) AS endpoints,
       (SELECT count(*) FROM batch) AS events,
       (SELECT count(*) FROM made) AS deliveries;

-- name: webhook_deliveries_claim
-- Up to %(limit)s due deliveries (fresh, retry-due, or with an expired lease) for %(owner)s, with
-- their body and their endpoint's URL and secrets, so a POST needs no further read. FOR UPDATE
-- SKIP LOCKED: two dispatchers never take the same row. The attempt number always rises: a
-- delivery is at least once (receivers dedupe on webhook-id), so a rescued row whose POST may have
-- gone out needs no look-up first, unlike an SMS. The caller commits at once.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
due AS (
    SELECT o.id
    FROM sms_outbox o
    WHERE o.kind = 'deliver_webhook' AND o.next_attempt_at <= (SELECT now FROM clock)
    ORDER BY o.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
),
claimed AS (
    UPDATE sms_outbox o
    SET state = 'leased',
        lease_owner = %(owner)s,
        lease_expires_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        next_attempt_at = clock.now + make_interval(secs => %(lease_seconds)s::float8),
        attempts = o.attempts + 1,
        updated_at = clock.now
    FROM clock
    -- By the primary key, whatever the plan (a generic plan, which knows no %(limit)s, joined
    -- `due` to a seq scan of the whole outbox, SMS rows included).
    WHERE o.id = ANY (ARRAY(SELECT id FROM due))
    RETURNING o.id, o.attempts, o.webhook_delivery_id, clock.now AS claimed_at
)
SELECT c.id, c.attempts AS attempt, c.claimed_at, d.id AS delivery_id, d.event_type, d.payload,
       d.created_at, w.id AS endpoint_id, w.url, w.secret, w.previous_secret,
       w.previous_secret_expires_at, w.enabled
FROM claimed c
JOIN sms_webhook_deliveries d ON d.id = c.webhook_delivery_id
JOIN sms_webhook_endpoints w ON w.id = d.endpoint_id
ORDER BY c.id;

-- name: webhook_deliveries_settle
-- One attempt's outcome, in one statement, if the row is still ours:
-- * delivered (2xx): the outbox row goes, the delivery is delivered, the endpoint is healthy again;
-- * retry: the outbox row is due again at %(retry_at)s, the delivery stays pending;
-- * failed (410 Gone, or retried for WEBHOOK_RETRY_HOURS): the outbox row goes, the delivery
--   failed;
-- * dropped (its endpoint was disabled): as failed, and the endpoint's health is left alone.
-- A failure moves the endpoint's last_failure_at, last_error and (when it was healthy)
-- failing_since, which comes back so the caller can tell an endpoint failing for too long. The
-- endpoint row is written at most once a second while its state stays the same (healthy, or
-- failing): a busy endpoint, or a dead one with a deep backlog, is not one hot row that every
-- settle of its deliveries rewrites and waits for.
-- A delivery no longer pending (dropped by webhook_endpoints_disable meanwhile) keeps its state.
-- Parking (migrations 0013 and 0020): a retry parks the endpoint's other deliveries for
-- %(park_seconds)s (at least until %(answer_by)s, when this delivery's retry, the probe, has been
-- answered), out of the outbox; a success releases them (webhook_deliveries_requeue queues them).
-- One probe per endpoint (0020): a retry of a delivery that was in flight when another one's
-- failure parked the endpoint joins the parked backlog (its outbox row goes, the delivery stays
-- pending) instead of retrying on a schedule of its own.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
role AS MATERIALIZED (
    -- Whether this retry joins the backlog: its endpoint is parked past this retry's answer by
    -- another delivery's failure (probe_delivery_id; null when parked before migration 0020).
    SELECT %(outcome)s::text = 'retry'
           AND w.parked_until >= %(answer_by)s::timestamptz
           AND w.probe_delivery_id IS NOT NULL AND w.probe_delivery_id <> d.id AS joins
    FROM sms_outbox o
    JOIN sms_webhook_deliveries d ON d.id = o.webhook_delivery_id
    JOIN sms_webhook_endpoints w ON w.id = d.endpoint_id
    WHERE o.id = %(id)s
),
finished AS (
    DELETE FROM sms_outbox o
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
      AND (%(outcome)s::text <> 'retry' OR coalesce((SELECT joins FROM role), false))
    RETURNING o.webhook_delivery_id AS id
),
again AS (
    UPDATE sms_outbox o
    SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
        next_attempt_at = %(retry_at)s::timestamptz, last_error = %(error)s,
        updated_at = clock.now
    FROM clock
    WHERE o.id = %(id)s AND o.attempts = %(attempt)s AND o.lease_owner = %(owner)s
      AND o.state = 'leased' AND %(outcome)s::text = 'retry'
      AND NOT coalesce((SELECT joins FROM role), false)
    RETURNING o.webhook_delivery_id AS id
),
ours AS (
    SELECT id FROM finished
    UNION ALL
    SELECT id FROM again
),
delivery AS (
    UPDATE sms_webhook_deliveries d
    SET state = CASE %(outcome)s::text WHEN 'delivered' THEN 'delivered'
                                       WHEN 'retry' THEN 'pending'
                                       ELSE 'failed' END,
        attempts = greatest(d.attempts, %(attempt)s),
        last_status = %(status)s,
        last_error = %(error)s,
        delivered_at = CASE WHEN %(outcome)s::text = 'delivered' THEN clock.now END
    FROM ours, clock
    WHERE d.id = ours.id AND d.state = 'pending'
    RETURNING d.id, d.endpoint_id
),
was AS (
    -- The endpoint as it was before this statement: parked or not.
    SELECT w.id, w.parked_until
    FROM sms_webhook_endpoints w
    JOIN delivery ON w.id = delivery.endpoint_id
),
health AS (
    UPDATE sms_webhook_endpoints w
    SET last_success_at = CASE WHEN %(outcome)s::text = 'delivered' THEN clock.now
                               ELSE w.last_success_at END,
        failing_since = CASE WHEN %(outcome)s::text = 'delivered' THEN NULL
                             ELSE coalesce(w.failing_since, clock.now) END,
        last_failure_at = CASE WHEN %(outcome)s::text = 'delivered' THEN w.last_failure_at
                               ELSE clock.now END,
        last_error = CASE WHEN %(outcome)s::text = 'delivered' THEN w.last_error
                          ELSE %(error)s END,
        parked_backlog = w.parked_backlog
                         OR coalesce((SELECT joins FROM role), false)
                         OR (%(outcome)s::text = 'retry'
                             AND (w.parked_until IS NULL
                                  OR w.parked_until < %(answer_by)s::timestamptz)),
        probe_delivery_id = CASE
                                WHEN %(outcome)s::text = 'retry'
                                     AND (w.parked_until IS NULL
                                          OR w.parked_until < %(answer_by)s::timestamptz)
                                THEN delivery.id
                                ELSE w.probe_delivery_id END,
        parked_until = CASE
                           WHEN %(outcome)s::text = 'delivered' THEN NULL
                           WHEN %(outcome)s::text = 'retry'
                                AND (w.parked_until IS NULL
                                     OR w.parked_until < %(answer_by)s::timestamptz)
                           THEN greatest(clock.now + make_interval(
                                             secs => %(park_seconds)s::float8),
                                         %(answer_by)s::timestamptz)
                           ELSE w.parked_until END
    FROM delivery, clock
    WHERE w.id = delivery.endpoint_id AND %(outcome)s::text <> 'dropped'
      AND CASE WHEN %(outcome)s::text = 'delivered'
               THEN w.failing_since IS NOT NULL OR w.last_success_at IS NULL
                    OR w.last_success_at < clock.now - interval '1 second'
                    OR w.parked_until IS NOT NULL
               ELSE w.failing_since IS NULL OR w.last_failure_at IS NULL
                    OR w.last_failure_at < clock.now - interval '1 second'
                    OR (%(outcome)s::text = 'retry'
                        AND (w.parked_until IS NULL
                             OR w.parked_until < %(answer_by)s::timestamptz))
                    -- A delivery that joined the backlog marks it, whenever (0020).
                    OR coalesce((SELECT joins FROM role), false) END
    RETURNING w.id, w.failing_since, w.parked_until
),
mover AS MATERIALIZED (
    -- The endpoint, when this settle parked it anew (a retry that moved parked_until) or released
    -- it (a success while parked); else no row. Decided here, before any backlog is read: as one
    -- CASE over the joined rows (a prepared statement's generic plan cannot fold the outcome
    -- away) it ran after the join, so every settle that wrote the endpoint row (one a second of
    -- a dead endpoint's probes) read its whole backlog to move nothing: 20-50 ms with 10,000
    -- pending, measured with auto_explain.
    SELECT h.id, h.parked_until
    FROM health h
    JOIN was ON was.id = h.id
    WHERE CASE %(outcome)s::text
              WHEN 'retry' THEN was.parked_until IS DISTINCT FROM h.parked_until
              WHEN 'delivered' THEN was.parked_until IS NOT NULL
              ELSE false END
),
parked AS (
    -- A retry that parks the endpoint takes its other ready deliveries that would come due before
    -- this one's answer (this one is the probe) out of the outbox: they wait in
    -- sms_webhook_deliveries (migration 0020; `health` set parked_backlog) until the endpoint is
    -- no longer parked, and the SMS path's hot table does not carry a dead endpoint's backlog.
    -- Only a settle that wrote the endpoint row does it, so settles of one endpoint take turns on
    -- that row instead of reading the same backlog together, and once per %(park_seconds)s.
    DELETE FROM sms_outbox o
    USING mover m
    JOIN sms_webhook_deliveries d ON d.endpoint_id = m.id AND d.state = 'pending'
    WHERE %(outcome)s::text = 'retry'
      AND o.webhook_delivery_id = d.id AND o.kind = 'deliver_webhook' AND o.state = 'ready'
      AND o.id <> %(id)s AND o.next_attempt_at < %(answer_by)s::timestamptz
    RETURNING o.id
),
moved AS (
    -- A success releases a parked endpoint: outbox rows parked before migration 0020 (due at
    -- parked_until) are due at once; webhook_deliveries_requeue queues the rest.
    UPDATE sms_outbox o
    SET next_attempt_at = clock.now, updated_at = clock.now
    FROM mover m
    JOIN sms_webhook_deliveries d ON d.endpoint_id = m.id AND d.state = 'pending'
    CROSS JOIN clock
    WHERE %(outcome)s::text = 'delivered'
      AND o.webhook_delivery_id = d.id AND o.kind = 'deliver_webhook' AND o.state = 'ready'
      AND o.id <> %(id)s AND o.next_attempt_at > clock.now
    RETURNING o.id
)
SELECT o.id AS delivery_id, d.endpoint_id, h.failing_since, (SELECT now FROM clock) AS now
FROM ours o
LEFT JOIN delivery d ON d.id = o.id
LEFT JOIN health h ON h.id = d.endpoint_id;

-- name: webhook_deliveries_delivered
-- webhook_deliveries_settle's `delivered` for many attempts at once (the webhook loop's group
-- commit, dispatcher/recorder.py): each row still ours (owner, attempt, leased) leaves the outbox
-- and its delivery is delivered; each endpoint among them is healthy again (written at most once
-- a second, as the single settle does) and, if it was parked, its parked deliveries are due at
-- once. The endpoints are locked in id order first, so two groups never deadlock on them. The
-- answer: the outbox ids that were ours.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::int[])
        AS t(id, attempt, status)
),
finished AS (
    DELETE FROM sms_outbox o
    USING input i
    WHERE o.id = i.id AND o.attempts = i.attempt AND o.lease_owner = %(owner)s
      AND o.state = 'leased'
    RETURNING o.id, o.webhook_delivery_id
),
delivery AS (
    UPDATE sms_webhook_deliveries d
    SET state = 'delivered', attempts = greatest(d.attempts, i.attempt), last_status = i.status,
        last_error = NULL, delivered_at = clock.now
    FROM finished f
    JOIN input i ON i.id = f.id
    CROSS JOIN clock
    WHERE d.id = f.webhook_delivery_id AND d.state = 'pending'
    RETURNING d.endpoint_id
),
was AS (
    SELECT w.id, w.parked_until
    FROM sms_webhook_endpoints w
    WHERE w.id IN (SELECT endpoint_id FROM delivery)
    ORDER BY w.id
    FOR NO KEY UPDATE
),
health AS (
    UPDATE sms_webhook_endpoints w
    SET last_success_at = clock.now, failing_since = NULL, parked_until = NULL
    FROM was, clock
    WHERE w.id = was.id
      AND (w.failing_since IS NOT NULL OR w.last_success_at IS NULL
           OR w.last_success_at < clock.now - interval '1 second' OR w.parked_until IS NOT NULL)
    RETURNING w.id
),
released AS MATERIALIZED (
    -- The endpoints this group released from parking (usually none), decided before any backlog
    -- is read, as webhook_deliveries_settle's `mover`: joined in one step, a generic plan made
    -- on empty tables read every pending delivery of a healthy endpoint against the outbox first
    -- and asked whether it had been parked last (3,000 waiting: 9 M rows, 0.7 s, once a second).
    SELECT h.id
    FROM health h
    JOIN was ON was.id = h.id
    WHERE was.parked_until IS NOT NULL
),
moved AS (
    -- Outbox rows parked before migration 0020 (due at parked_until) are due at once; the rest
    -- of a parked backlog is webhook_deliveries_requeue's. EXISTS is a one-time test: with no
    -- endpoint released, no backlog is read.
    UPDATE sms_outbox o
    SET next_attempt_at = clock.now, updated_at = clock.now
    FROM released r
    JOIN sms_webhook_deliveries d ON d.endpoint_id = r.id AND d.state = 'pending'
    CROSS JOIN clock
    WHERE EXISTS (SELECT 1 FROM released)
      AND o.webhook_delivery_id = d.id AND o.kind = 'deliver_webhook' AND o.state = 'ready'
      AND o.next_attempt_at > clock.now
    RETURNING o.id
)
SELECT f.id
FROM finished f;

-- name: webhook_deliveries_unpark
-- The first of the two statements of webhook_deliveries_requeue's transaction: the enabled
-- endpoints whose parked deliveries wait without outbox rows (parked_backlog, migration 0020) and
-- that are no longer parked (a probe's success cleared parked_until, or it has passed), their
-- mark taken off. The row locks it takes come first, so the next statement, whose snapshot is
-- later, sees every delivery left out by a statement that marked one of these endpoints before
-- (it held the same row until it committed); one that marks it later waits for this transaction
-- and marks it again.
UPDATE sms_webhook_endpoints w
SET parked_backlog = false
WHERE w.parked_backlog AND w.enabled
  AND (w.parked_until IS NULL OR w.parked_until <= coalesce(%(now)s::timestamptz, now()))
RETURNING w.id;

-- name: webhook_deliveries_requeue
-- The pending deliveries of %(endpoints)s (webhook_deliveries_unpark's, same transaction) that
-- have no outbox row get one, due now, oldest first: the backlog a parked endpoint kept out of
-- the outbox. A delivery in flight has its row already; ON CONFLICT keeps any other writer of a
-- row for the same delivery (a replay) from failing this. Reads
-- sms_webhook_deliveries_pending_idx and the outbox's unique webhook_delivery_id.
INSERT INTO sms_outbox (kind, webhook_delivery_id, next_attempt_at)
SELECT 'deliver_webhook', d.id, coalesce(%(now)s::timestamptz, now())
FROM sms_webhook_deliveries d
WHERE d.endpoint_id = ANY (%(endpoints)s::bigint[]) AND d.state = 'pending'
  AND NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.webhook_delivery_id = d.id)
ORDER BY d.endpoint_id, d.created_at
ON CONFLICT (webhook_delivery_id) DO NOTHING
RETURNING id;

-- name: webhook_deliveries_release
-- Graceful stop: claimed deliveries not settled go back, due at once, their attempt returned.
-- One whose POST was cut off may have reached the receiver: it is sent again (at least once;
-- the receiver dedupes on webhook-id).
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
)
UPDATE sms_outbox o
SET state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
    attempts = greatest(o.attempts - 1, 0), next_attempt_at = clock.now, updated_at = clock.now
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS i(id, attempt), clock
WHERE o.id = i.id AND o.attempts = i.attempt AND o.lease_owner = %(owner)s
  AND o.state = 'leased' AND o.kind = 'deliver_webhook'
RETURNING o.id;

-- name: webhook_deliveries_queue_test
-- A `webhook.test` delivery to one endpoint of %(owner)s (any key's when NULL), with its outbox
-- row: the same path as every real event (claim, sign, POST, retry), whatever events the
-- endpoint chose. Only to an enabled endpoint (the loop drops a disabled one's deliveries); the
-- row that comes back says which of "no such endpoint", "disabled" and "queued" it was.
WITH endpoint AS (
    SELECT w.id, w.enabled
    FROM sms_webhook_endpoints w
    WHERE w.id = %(endpoint_id)s AND (%(owner)s::bigint IS NULL OR w.api_key_id = %(owner)s)
),
made AS (
    INSERT INTO sms_webhook_deliveries (endpoint_id, event_type, payload, occurred_at)
    SELECT e.id, 'webhook.test',
           jsonb_build_object(
               'type', 'webhook.test',
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object('endpoint_id', e.id)),
           now()
    FROM endpoint e
    WHERE e.enabled
    RETURNING id
),
queued AS (
    INSERT INTO sms_outbox (kind, webhook_delivery_id)
    SELECT 'deliver_webhook', made.id FROM made
)
SELECT e.id AS endpoint_id, e.enabled, made.id AS delivery_id
FROM endpoint e
LEFT JOIN made ON true;

-- name: webhook_deliveries_replay
-- Send again the deliveries of an enabled endpoint made since %(since)s that are no longer
-- pending: the failed ones (given up while the endpoint was down, or dropped when it was
-- disabled) and, with %(delivered)s, the delivered ones too (a receiver that lost what it got).
-- Each stays the same row, so it keeps its webhook-id and body: a receiver that did get it
-- drops it as a duplicate. It is pending again with new outbox work, due now. Pending
-- deliveries have their outbox row already (webhook_delivery_id is UNIQUE) and are left as
-- they are. Reads sms_webhook_deliveries_endpoint_idx (endpoint_id, created_at).
WITH endpoint AS (
    SELECT w.id
    FROM sms_webhook_endpoints w
    WHERE w.id = %(endpoint_id)s AND w.enabled
),
again AS (
    UPDATE sms_webhook_deliveries d
    SET state = 'pending', delivered_at = NULL
    FROM endpoint
    WHERE d.endpoint_id = endpoint.id AND d.created_at >= %(since)s
      AND (d.state = 'failed' OR (%(delivered)s AND d.state = 'delivered'))
    RETURNING d.id
)
INSERT INTO sms_outbox (kind, webhook_delivery_id)
SELECT 'deliver_webhook', again.id FROM again
RETURNING webhook_delivery_id;

-- name: webhook_deliveries_prune
-- Retention (smsctl prune): finished deliveries (delivered or failed) made more than older_than
-- ago, one batch, oldest first (sms_webhook_deliveries_finished_idx). Pending ones stay: they are
-- outbox work, and a disabled endpoint's replay (`smsctl webhooks replay --since`) reads only
-- what is still here.
DELETE FROM sms_webhook_deliveries
WHERE id IN (SELECT id FROM sms_webhook_deliveries
             WHERE state <> 'pending' AND created_at < now() - %(older_than)s::interval
             ORDER BY created_at
             LIMIT %(batch)s)
RETURNING id;
