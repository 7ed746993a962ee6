-- 0012: recipient_hourly_limit counted inside the enqueue statement. Until now the API sent the
-- (key, recipient) advisory locks as a statement of their own, pipelined before messages_enqueue,
-- so that the enqueue's snapshot was taken after the locks; the pipeline and the second statement
-- cost the limited send path about a fifth of its rate (bench limits). A VOLATILE function takes a
-- fresh snapshot for each statement it runs (READ COMMITTED), so this one can take the locks and
-- then count, in one call made by messages_enqueue's `limited`: the count sees every message of
-- whoever held a lock before, and the locks are held until the enqueue's transaction ends.
CREATE FUNCTION sms_recipients_over_limit(
    p_api_key_id bigint, p_to_numbers text[], p_counts int[], p_limit int)
RETURNS TABLE (to_number text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    recent bigint;
BEGIN
    IF p_limit IS NULL OR p_api_key_id IS NULL THEN
        RETURN;  -- no limit: nothing locked, nothing counted
    END IF;
    IF cardinality(p_to_numbers) = 1 THEN
        -- One recipient (every POST /sms/send): a lock and a count, each a plain statement,
        -- which PL/pgSQL runs about four times cheaper than the general case below (measured:
        -- ~25 us against ~95 us a call).
        PERFORM pg_advisory_xact_lock(
            hashtextextended(p_api_key_id::text || ':' || p_to_numbers[1], 0));
        -- This statement's snapshot is taken now, after the lock. sms_messages_to_idx
        -- (to_number, created_at) walks the recipient's hour, and the key and direction filter
        -- those few rows. OFFSET 0 keeps them out of the scan: offered api_key_id, the planner
        -- took sms_messages_key_created_idx whenever the statistics made one key look rare, and
        -- walked every message of the key's hour on each request.
        SELECT count(*) INTO recent
        FROM (SELECT m.api_key_id, m.direction
              FROM sms_messages m
              WHERE m.to_number = p_to_numbers[1]
                AND m.created_at > now() - interval '1 hour'
              OFFSET 0) AS m
        WHERE m.api_key_id = p_api_key_id AND m.direction = 'outbound';
        IF recent + p_counts[1] > p_limit THEN
            to_number := p_to_numbers[1];
            RETURN NEXT;
        END IF;
        RETURN;
    END IF;
    -- Sorted, so two requests that share recipients take the locks in one order and never
    -- deadlock. The key: a hash of key id and recipient.
    PERFORM pg_advisory_xact_lock(k)
    FROM (SELECT DISTINCT hashtextextended(p_api_key_id::text || ':' || t, 0) AS k
          FROM unnest(p_to_numbers) AS t) AS keys
    ORDER BY k;
    -- As above, for each recipient, in a snapshot taken after the locks.
    RETURN QUERY
    SELECT a.t
    FROM unnest(p_to_numbers, p_counts) AS a(t, n)
    CROSS JOIN LATERAL (
        SELECT count(*) AS recent
        FROM (SELECT m.api_key_id, m.direction
              FROM sms_messages m
              WHERE m.to_number = a.t
                AND m.created_at > now() - interval '1 hour'
              OFFSET 0) AS m
        WHERE m.api_key_id = p_api_key_id AND m.direction = 'outbound'
    ) AS r
    WHERE r.recent + a.n > p_limit;
END
$$;
COMMENT ON FUNCTION sms_recipients_over_limit(bigint, text[], int[], int) IS 'recipient_hourly_limit: locks (key, recipient) for the rest of the transaction, then answers the recipients whose messages from the key in the trailing hour plus p_counts (this request''s) would pass p_limit. NULL limit: nothing.';
