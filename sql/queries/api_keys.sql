-- sms_api_keys: keys kept as SHA-256, never the key.

-- name: api_keys_insert
-- Only the SHA-256 of the key reaches the database; the key is shown once by the caller.
INSERT INTO sms_api_keys (name, key_sha256)
VALUES (%(name)s, %(key_sha256)s)
RETURNING id;

-- name: api_keys_authenticate
-- Served by the unique index on key_sha256. A revoked key is as unknown as a wrong one.
SELECT id
FROM sms_api_keys
WHERE key_sha256 = %(key_sha256)s
  AND revoked_at IS NULL;

-- name: api_keys_authenticate_with_default_sender
-- POST /sms/send's first read, one round trip: the key (as api_keys_authenticate: unique index on
-- key_sha256, revoked keys unknown) and the default sender (partial unique index
-- sms_senders_one_default), so a request naming no sender needs no second read. Always one row.
SELECT k.id AS api_key_id, s.phone_number, s.provider, s.enabled, s.is_default
FROM (SELECT 1) AS one
LEFT JOIN sms_api_keys k ON k.key_sha256 = %(key_sha256)s AND k.revoked_at IS NULL
LEFT JOIN sms_senders s ON s.is_default;

-- name: api_keys_list
-- Small table, read by operators: every key, oldest first; the hash is not shown.
SELECT id, name, created_at, revoked_at
FROM sms_api_keys
ORDER BY id;

-- name: api_keys_revoke
-- Guarded on revoked_at IS NULL: a second revoke changes nothing and returns no row.
UPDATE sms_api_keys
SET revoked_at = now()
WHERE id = %(id)s
  AND revoked_at IS NULL
RETURNING id;
