-- 0020: a parked webhook endpoint's backlog leaves the outbox (issue 14: "a dead endpoint with a
-- deep backlog changes no SMS latency"). Until now a parked endpoint (0013) kept one sms_outbox
-- row per pending delivery, due at parked_until: thousands of rows of a dead endpoint in the hot
-- table the SMS claim, its indexes and its frequent autovacuum work on, and one more for every
-- event the fan-out made for it meanwhile. Now its pending deliveries wait in
-- sms_webhook_deliveries alone, and sms_outbox holds only the probe (and what is in flight):
-- * the settle that parks an endpoint deletes the outbox rows of its other ready deliveries,
--   instead of moving them to parked_until;
-- * the fan-out makes a parked endpoint's new deliveries without outbox rows;
-- * both set `parked_backlog`, in the same statement, and the webhook loop gives those
--   deliveries their outbox rows again (webhook_deliveries_requeue) once the endpoint is no longer
--   parked: at once after a probe's success (which clears parked_until), or when parked_until
--   passes (a probe lost), as parked rows came due before.
-- * one probe per endpoint: the deliveries that were in flight when the first failure parked the
--   endpoint used to retry each on a backoff of its own (64 probes of a dead endpoint instead of
--   one); now the settle that parks the endpoint names its delivery the probe
--   (`probe_delivery_id`), and the others' retries join the parked backlog.
-- The delivery rows, their ids (webhook-id) and bodies are the same as before; only where they
-- wait changes. Outbox rows parked before this migration keep waiting for parked_until, or for
-- the release that makes them due, as before.
ALTER TABLE sms_webhook_endpoints ADD COLUMN parked_backlog boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN sms_webhook_endpoints.parked_backlog IS 'Some pending deliveries of this endpoint have no outbox row (parked, migration 0020): set by the statement that leaves them out, cleared by webhook_deliveries_requeue when it gives them their rows again (once the endpoint is no longer parked).';
COMMENT ON COLUMN sms_webhook_endpoints.parked_until IS 'While the endpoint fails: its deliveries other than the one being retried (the probe) wait until this time, without outbox rows (migration 0020); cleared by a success, after which they are queued again at once.';
ALTER TABLE sms_webhook_endpoints ADD COLUMN probe_delivery_id uuid;
COMMENT ON COLUMN sms_webhook_endpoints.probe_delivery_id IS 'The delivery whose retries probe the endpoint while it is parked (set by the settle that parked it; meaningful while parked_until is ahead): the retry of any other delivery of it joins the parked backlog.';
