-- 0005: a status sweeper that keeps up (issue 10). A status lookup that timed out or failed for a
-- passing reason is asked again after a short backoff, not a whole STATUS_SWEEP_AFTER_SECONDS
-- later; the backoff doubles with each failure in a row.

-- Both columns are bookkeeping of dispatcher/sweeper.py only. ADD COLUMN with a constant default
-- rewrites nothing; the CHECK is added NOT VALID so no scan runs under this migration's lock
-- (every existing row holds the default 0, and new writes are checked).
ALTER TABLE sms_messages
    ADD COLUMN status_recheck_at timestamptz,
    ADD COLUMN status_check_failures integer NOT NULL DEFAULT 0;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_status_check_failures_check
    CHECK (status_check_failures >= 0) NOT VALID;

COMMENT ON COLUMN sms_messages.status_checked_at IS 'When the status sweeper last claimed the message to ask its provider for the status (callbacks missing); a sweeper skips messages checked within STATUS_SWEEP_AFTER_SECONDS unless status_recheck_at is due.';
COMMENT ON COLUMN sms_messages.status_recheck_at IS 'When the status sweeper asks again after a lookup that timed out or failed for a passing reason (connection, 5xx, 429); null when the next check is the normal one, STATUS_SWEEP_AFTER_SECONDS after status_checked_at.';
COMMENT ON COLUMN sms_messages.status_check_failures IS 'Status lookups in a row that timed out or failed for a passing reason; each one doubles the wait before the next (15 s, 30 s, ... up to STATUS_SWEEP_AFTER_SECONDS). Back to 0 once the provider answers.';
