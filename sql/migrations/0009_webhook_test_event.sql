-- 0009: the test event of customer webhooks (POST /sms/webhooks/{id}/test, smsctl webhooks
-- test). A test is an sms_webhook_deliveries row like any other, so it goes out through the same
-- outbox work (deliver_webhook), signing and retries as a real event; its type `webhook.test` is
-- no event an endpoint subscribes to (sms_webhook_endpoints.events keeps its own list), and the
-- fan-out triggers never write it.
ALTER TABLE sms_webhook_deliveries DROP CONSTRAINT sms_webhook_deliveries_event_type_check;
ALTER TABLE sms_webhook_deliveries ADD CONSTRAINT sms_webhook_deliveries_event_type_check
    CHECK (event_type IN (
        'message.queued', 'message.sent', 'message.delivered', 'message.undelivered',
        'message.failed', 'message.expired', 'message.canceled', 'message.read',
        'message.received', 'recipient.opted_out', 'recipient.opted_in', 'webhook.test'));
COMMENT ON COLUMN sms_webhook_deliveries.event_type IS 'The body''s "type": an event of DESIGN section 13, or webhook.test (asked for by POST /sms/webhooks/{id}/test; sent whatever the endpoint''s events).';
