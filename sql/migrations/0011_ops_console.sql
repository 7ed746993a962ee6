-- 0011: the ops console (DESIGN section 14): its sign-in sessions, and the event that records an
-- operator revealing a message's recipient.

-- A console session of an operator key. Only the SHA-256 of the session token (the cookie's value)
-- is kept, as for API keys: someone who can read this table cannot sign in with what it holds.
-- Revoking the key ends its sessions (the look-up joins the key and checks revoked_at and role);
-- signing out deletes the row.
CREATE TABLE sms_ops_sessions (
    token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    api_key_id   bigint NOT NULL REFERENCES sms_api_keys (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
-- Expired sessions are deleted by each sign-in (api_keys_session_open) in expiry order.
CREATE INDEX sms_ops_sessions_expiry_idx ON sms_ops_sessions (expires_at);
COMMENT ON TABLE sms_ops_sessions IS 'Signed-in ops console sessions of operator keys; only the SHA-256 of the session cookie is kept.';
COMMENT ON COLUMN sms_ops_sessions.token_sha256 IS 'Lowercase hex SHA-256 of the session cookie.';
COMMENT ON COLUMN sms_ops_sessions.expires_at IS 'Past this time the session is void (sign in again).';

-- recipient_revealed: an operator pressed "reveal" on a message's timeline; detail.api_key_id
-- names the operator key. The event-type CHECK is found by its definition rather than its name,
-- so this applies whatever an earlier migration named it. Since 0010 the table is partitioned:
-- a partition's copy of the CHECK is inherited (never local to it, attached ones included), so
-- dropping the parent's drops every copy, and the new CHECK reaches every partition.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conname
        FROM pg_constraint
        WHERE conrelid = 'sms_message_events'::regclass
          AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%event_type = ANY%'
    LOOP
        EXECUTE format('ALTER TABLE sms_message_events DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
ALTER TABLE sms_message_events ADD CONSTRAINT sms_message_events_event_type_check
    CHECK (event_type IN
        ('created', 'attempt_started', 'attempt_result', 'callback', 'transition', 'alert',
         'canceled', 'requeued', 'reconciled', 'sweep', 'reconcile_miss',
         'duplicate_send_detected', 'held', 'expired', 'received', 'suppressed',
         'recipient_revealed'));
COMMENT ON COLUMN sms_message_events.event_type IS 'created, attempt_started, attempt_result, callback, transition, alert, canceled, requeued, reconciled, reconcile_miss, duplicate_send_detected, sweep, held (quiet hours; detail.release_at), expired, received (inbound), suppressed (canceled at claim: the recipient opted out), recipient_revealed (an operator saw the full number in the ops console; detail.api_key_id).';
