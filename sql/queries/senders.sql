-- sms_senders: the numbers we may send from.

-- name: senders_lock
-- Two API processes starting at once register and pick the default one after the other, so the
-- partial unique index on is_default never sees a transient second default.
SELECT pg_advisory_xact_lock(7715002);

-- name: senders_register
-- Start-up registration of a configured number. On conflict only the provider follows the
-- configuration: an operator who disabled the number in SQL keeps it disabled across restarts.
INSERT INTO sms_senders (phone_number, provider)
VALUES (%(phone_number)s, %(provider)s)
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
-- Every sender, the default first (small table).
SELECT phone_number, provider, enabled, is_default, created_at, updated_at
FROM sms_senders
ORDER BY is_default DESC, phone_number;

-- name: senders_add
-- A new sender, enabled; an existing number is left untouched and no row comes back.
INSERT INTO sms_senders (phone_number, provider)
VALUES (%(phone_number)s, %(provider)s)
ON CONFLICT (phone_number) DO NOTHING
RETURNING phone_number;

-- name: senders_disable
-- Disabling the default sender also clears its default flag (CHECK NOT is_default OR enabled).
-- Guarded on enabled: a second disable returns no row.
UPDATE sms_senders
SET enabled = false, is_default = false, updated_at = now()
WHERE phone_number = %(phone_number)s AND enabled
RETURNING phone_number;
