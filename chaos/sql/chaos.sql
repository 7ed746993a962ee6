-- Queries of the fault harness only (chaos/). Loaded with shared.queries.parse; never used by the
-- service. Each scenario runs on a fresh database cloned from a migrated template.

-- name: chaos_progress
-- Polled (about once a second) until the scenario is quiet: work left in the hot table and
-- messages nobody has handed to a provider yet. Cheap: the outbox is small, pending is indexed.
SELECT (SELECT count(*) FROM sms_outbox WHERE kind = 'send_sms') AS outbox,
       (SELECT count(*) FROM sms_messages WHERE delivery_status = 'pending') AS pending,
       (SELECT count(*) FROM sms_messages) AS messages,
       (SELECT coalesce(max(updated_at), 'epoch') FROM sms_messages) AS last_update,
       (SELECT coalesce(max(submitted_at), 'epoch') FROM sms_messages) AS last_submitted,
       now() AS db_now;

-- name: chaos_messages
-- The database's side of the verdict: every message with its status and recorded provider sid.
SELECT id::text AS id, body, delivery_status AS status, provider, provider_sid
FROM sms_messages
WHERE direction = 'outbound';

-- name: chaos_outbox_messages
-- Messages that still have send work queued after quiescence (they count as stuck).
SELECT message_id::text AS id
FROM sms_outbox
WHERE kind = 'send_sms' AND message_id IS NOT NULL;

-- name: chaos_detected_doubles
-- Callbacks that named our message id with a sid other than the recorded one: the service's own
-- detection of a duplicate send (event type added with the delivery-truth work).
SELECT count(*) AS n
FROM sms_message_events
WHERE event_type = 'duplicate_send_detected';

-- name: chaos_lease_holders
-- Who holds leases right now (lease_owner is host:pid:uuid8): the pause picks a busy dispatcher.
SELECT lease_owner, count(*) AS leased
FROM sms_outbox
WHERE state = 'leased' AND lease_owner IS NOT NULL
GROUP BY lease_owner
ORDER BY leased DESC;

-- name: chaos_lock_waiters
-- Sampled while a dispatcher is paused: sessions of this database waiting for a lock (held, for
-- example, by the paused dispatcher's open transaction).
SELECT count(*) AS n
FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock';
