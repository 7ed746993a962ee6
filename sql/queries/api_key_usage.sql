-- sms_api_key_usage: the quota API processes reserved per key and UTC window (shared/quota.py).

-- name: api_key_usage_reserve
-- One API process reserves `want` of a key's current window (kind 'minute' or 'day', which is
-- also the date_trunc unit) in one autocommit statement. The window is the database's clock (or
-- the injected `now` of tests), truncated in UTC, so every process and host agrees on it. The
-- guarded ON CONFLICT DO UPDATE locks the window's row and re-reads it after any concurrent
-- reservation, so `used` never passes the limit however many processes ask at once; an insert
-- asking more than the limit writes nothing. Always one row: the clock and the window's bounds
-- (for Retry-After and for when the reservation dies), and `used` after the reservation, NULL
-- when it was refused. The primary key (api_key_id, kind, window_start) serves the conflict.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
),
win AS (
    SELECT clock.now, date_trunc(%(kind)s::text, clock.now, 'UTC') AS start
    FROM clock
),
reserved AS (
    INSERT INTO sms_api_key_usage AS u (api_key_id, kind, window_start, used)
    SELECT %(api_key_id)s, %(kind)s::text, win.start, %(want)s::integer
    FROM win
    WHERE %(want)s::integer <= %(limit)s::integer
    ON CONFLICT (api_key_id, kind, window_start) DO UPDATE
    SET used = u.used + excluded.used
    WHERE u.used + excluded.used <= %(limit)s::integer
    RETURNING u.used
)
SELECT win.now, win.start, win.start + ('1 ' || %(kind)s::text)::interval AS ends,
       (SELECT used FROM reserved) AS used
FROM win;

-- name: api_key_usage_prune
-- Windows that ended long ago (database clock): the API only ever reserves from the current
-- ones. Run by smsctl prune; the table holds a row per key per minute used, so it is small.
DELETE FROM sms_api_key_usage
WHERE window_start < now() - %(older_than)s::interval
RETURNING api_key_id;
