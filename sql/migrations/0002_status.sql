-- Status sweeper bookkeeping: lets several dispatchers share the sweep without asking twice.

ALTER TABLE sms_messages ADD COLUMN status_checked_at timestamptz;
COMMENT ON COLUMN sms_messages.status_checked_at IS 'When the status sweeper last claimed the message to ask its provider for the status (callbacks missing); a sweeper skips messages checked within STATUS_SWEEP_AFTER_SECONDS.';
