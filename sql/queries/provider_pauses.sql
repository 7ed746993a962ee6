-- sms_provider_pauses: a provider paused after a configuration error.

-- name: provider_pauses_list
-- Paused providers (config errors); a row whose paused_until has passed no longer holds work back.
SELECT provider, paused_until, paused_until > now() AS active, failures, error_code, reason,
       updated_at
FROM sms_provider_pauses
ORDER BY provider;

-- name: provider_pauses_open
-- A config error pauses the provider. Only the first failure of an episode inserts the row (and so
-- alerts the operator); while a pause is running, more failures from in-flight sends change nothing;
-- once it has run out, the next failure doubles it, up to the cap. `opened` is true on insert.
-- A successful send deletes the row (outbox_record_sent), which ends the episode.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
)
INSERT INTO sms_provider_pauses AS p (provider, paused_until, failures, error_code, reason, updated_at)
SELECT %(provider)s, clock.now + make_interval(secs => %(base_seconds)s::float8), 1,
       %(error_code)s, %(reason)s, clock.now
FROM clock
ON CONFLICT (provider) DO UPDATE
SET failures = CASE WHEN p.paused_until > EXCLUDED.updated_at THEN p.failures ELSE p.failures + 1 END,
    paused_until = CASE
        WHEN p.paused_until > EXCLUDED.updated_at THEN p.paused_until
        ELSE EXCLUDED.updated_at + make_interval(secs => least(
            %(cap_seconds)s::float8, %(base_seconds)s::float8 * 2 ^ least(p.failures, 30)))
        END,
    error_code = EXCLUDED.error_code, reason = EXCLUDED.reason, updated_at = EXCLUDED.updated_at
RETURNING (xmax = 0) AS opened, failures, paused_until;
