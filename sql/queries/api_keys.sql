-- sms_api_keys: keys kept as SHA-256, never the key; each with a role and its limits.

-- name: api_keys_insert
-- Only the SHA-256 of the key reaches the database; the key is shown once by the caller. The
-- limits are the caller's choice (smsctl fills in the API_KEY_DEFAULT_* settings).
INSERT INTO sms_api_keys (name, key_sha256, role, rate_per_minute, daily_message_limit,
                          recipient_hourly_limit, allowed_countries)
VALUES (%(name)s, %(key_sha256)s, %(role)s, %(rate_per_minute)s, %(daily_message_limit)s,
        %(recipient_hourly_limit)s, %(allowed_countries)s)
RETURNING id;

-- name: api_keys_authenticate
-- Served by the unique index on key_sha256. A revoked key is as unknown as a wrong one. The role,
-- limits and countries come with the id: every request reads them here, so a change made with
-- smsctl applies from the next request on, and no request needs a second read.
SELECT id, role, rate_per_minute, daily_message_limit, recipient_hourly_limit, allowed_countries
FROM sms_api_keys
WHERE key_sha256 = %(key_sha256)s
  AND revoked_at IS NULL;

-- name: api_keys_authenticate_many
-- The send paths' first read, one round trip for the keys of concurrent requests
-- (api/key_reads.py): for each hash, the key with its role, limits and countries (as
-- api_keys_authenticate: unique index on key_sha256, revoked keys unknown: NULLs) and the default
-- sender (partial unique index sms_senders_one_default), so a request naming no sender needs no
-- second read. One row per hash, in the order given.
SELECT k.id AS api_key_id, k.role, k.rate_per_minute, k.daily_message_limit,
       k.recipient_hourly_limit, k.allowed_countries,
       s.phone_number, s.provider, s.enabled, s.is_default
FROM unnest(%(key_sha256)s::text[]) WITH ORDINALITY AS h (key_sha256, ord)
LEFT JOIN sms_api_keys k ON k.key_sha256 = h.key_sha256 AND k.revoked_at IS NULL
LEFT JOIN sms_senders s ON s.is_default
ORDER BY h.ord;

-- name: api_keys_list
-- Small table, read by operators: every key, oldest first; the hash is not shown.
SELECT id, name, created_at, revoked_at, role, rate_per_minute, daily_message_limit,
       recipient_hourly_limit, allowed_countries
FROM sms_api_keys
ORDER BY id;

-- name: api_keys_set_limits
-- Changes only the limits named (set_* true); a NULL value removes that limit. Revoked keys are
-- left alone. The API reads the new values with the next request's key.
UPDATE sms_api_keys
SET rate_per_minute = CASE WHEN %(set_rate_per_minute)s THEN %(rate_per_minute)s::integer
                           ELSE rate_per_minute END,
    daily_message_limit = CASE WHEN %(set_daily_message_limit)s
                               THEN %(daily_message_limit)s::integer
                               ELSE daily_message_limit END,
    recipient_hourly_limit = CASE WHEN %(set_recipient_hourly_limit)s
                                  THEN %(recipient_hourly_limit)s::integer
                                  ELSE recipient_hourly_limit END,
    allowed_countries = CASE WHEN %(set_allowed_countries)s THEN %(allowed_countries)s::text[]
                             ELSE allowed_countries END
WHERE id = %(id)s
  AND revoked_at IS NULL
RETURNING id, name, created_at, revoked_at, role, rate_per_minute, daily_message_limit,
          recipient_hourly_limit, allowed_countries;

-- name: api_keys_revoke
-- Guarded on revoked_at IS NULL: a second revoke changes nothing and returns no row.
UPDATE sms_api_keys
SET revoked_at = now()
WHERE id = %(id)s
  AND revoked_at IS NULL
RETURNING id;

-- name: api_keys_session_open
-- An ops console session for an operator key (sms_ops_sessions, migration 0011): only the token's
-- SHA-256 is stored. The key is checked again here (active, operator) so a key revoked or demoted
-- between the sign-in's look-up and this insert opens nothing (no row back). Expired sessions go
-- in the same statement, oldest first by sms_ops_sessions_expiry_idx, a bounded batch per sign-in.
WITH expired AS (
    DELETE FROM sms_ops_sessions
    WHERE token_sha256 IN (SELECT token_sha256 FROM sms_ops_sessions
                           WHERE expires_at <= now()
                           ORDER BY expires_at
                           LIMIT 100)
)
INSERT INTO sms_ops_sessions (token_sha256, api_key_id, expires_at)
SELECT %(token_sha256)s, k.id, now() + %(lifetime)s::interval
FROM sms_api_keys k
WHERE k.id = %(api_key_id)s AND k.revoked_at IS NULL AND k.role = 'operator'
RETURNING api_key_id, expires_at;

-- name: api_keys_session_authenticate
-- Every console request: the session by its primary key, and its key, still active and still an
-- operator (a key revoked or made a sender since sign-in is signed out at once).
SELECT k.id, k.name, s.expires_at
FROM sms_ops_sessions s
JOIN sms_api_keys k ON k.id = s.api_key_id
WHERE s.token_sha256 = %(token_sha256)s
  AND s.expires_at > now()
  AND k.revoked_at IS NULL
  AND k.role = 'operator';

-- name: api_keys_session_close
-- Sign out: the session is gone (primary key), so its cookie is worth nothing even if kept.
DELETE FROM sms_ops_sessions
WHERE token_sha256 = %(token_sha256)s;
