-- sms_suppressions: recipients who must not be texted, by one sender or by every sender. The
-- enqueue (messages_enqueue), the claim (outbox_claim_due) and inbound keywords (messages_receive)
-- read and write it inside their own statements; these are the operators' and the API's.

-- name: suppressions_list
-- Newest first by id (identity: the order they were made), keyset-paged on the primary key, so a
-- page costs the same however deep it is without an index of its own; the cursor is the last
-- row's id. A phone_number filter reads sms_suppressions_once (phone_number leads it). Run
-- unprepared: a generic plan for NULL-or-equal would not use that index.
SELECT id, phone_number, sender_number, reason, source_message_id, api_key_id, created_at
FROM sms_suppressions
WHERE (%(phone_number)s::text IS NULL OR phone_number = %(phone_number)s::text)
  AND (%(after_id)s::bigint IS NULL OR id < %(after_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: suppressions_add
-- Idempotent: a suppression of the same (recipient, sender or every sender) that exists already
-- conflicts on sms_suppressions_once and is returned as it is (its reason and cause kept), with
-- created = false. A conflicting row committed after this statement's snapshot is not visible to
-- the second SELECT, so no row comes back: the caller runs the statement again.
WITH added AS (
    INSERT INTO sms_suppressions (phone_number, sender_number, reason, api_key_id)
    VALUES (%(phone_number)s, %(sender_number)s, %(reason)s, %(api_key_id)s)
    ON CONFLICT (phone_number, coalesce(sender_number, '')) DO NOTHING
    RETURNING id, phone_number, sender_number, reason, source_message_id, api_key_id, created_at
)
SELECT id, phone_number, sender_number, reason, source_message_id, api_key_id, created_at,
       true AS created
FROM added
UNION ALL
SELECT id, phone_number, sender_number, reason, source_message_id, api_key_id, created_at, false
FROM sms_suppressions
WHERE phone_number = %(phone_number)s
  AND coalesce(sender_number, '') = coalesce(%(sender_number)s::text, '')
  AND NOT EXISTS (SELECT 1 FROM added);

-- name: suppressions_remove
-- One suppression: of this sender, or (sender_number NULL) the every-sender one; never both. The
-- WHERE is the expression of sms_suppressions_once, so the index finds it. Unless
-- %(any_reason)s, only suppressions an API key or operator made are lifted: an opt-out the recipient
-- made (STOP, a provider's opt-out refusal) is lifted by the recipient (START) or an operator.
DELETE FROM sms_suppressions
WHERE phone_number = %(phone_number)s
  AND coalesce(sender_number, '') = coalesce(%(sender_number)s::text, '')
  AND (%(any_reason)s::boolean OR reason IN ('api', 'operator'))
RETURNING id, phone_number, sender_number, reason, source_message_id, api_key_id, created_at;

-- name: suppressions_add_provider_opt_out
-- The provider refused a send because the recipient opted out of the sender (Twilio 21610): the
-- recipient is suppressed for that sender, naming the refused message. Run in the transaction that
-- fails the message; an existing suppression is kept as it is.
INSERT INTO sms_suppressions (phone_number, sender_number, reason, source_message_id, api_key_id)
SELECT m.to_number, m.from_number, 'provider_opt_out', m.id, m.api_key_id
FROM sms_messages m
WHERE m.id = %(message_id)s
ON CONFLICT (phone_number, coalesce(sender_number, '')) DO NOTHING;

-- name: suppressions_exists
-- Whether one suppression exists (sms_suppressions_once finds it), whoever made it.
SELECT 1
FROM sms_suppressions
WHERE phone_number = %(phone_number)s
  AND coalesce(sender_number, '') = coalesce(%(sender_number)s::text, '');
