-- sms_conversations: one per (sender, recipient).

-- name: conversations_lookup
-- By primary key, to check a conversation_id named in a request against its (from, to) pair.
SELECT id, from_number, to_number
FROM sms_conversations
WHERE id = %(id)s;
