-- 0015: the claim walks only senders with work queued. Until now outbox_claim_due visited senders
-- in pace order over sms_senders_pace_idx and probed each for due work, so every registered
-- number whose allowance was unspent (every idle one) cost every claim a probe: 10,000 idle
-- numbers made a claim of 100 cost 7 times as much (bench claim, claim_idle_ratio). The claim now
-- finds senders by descending sms_outbox_pace_idx, round robin from where the dispatcher's last
-- claim stopped, and nothing reads sms_senders_pace_idx any more. Without it the claim's update
-- of pace_tat changes no indexed column, so it can be a HOT update (no index entry per claim).
DROP INDEX IF EXISTS sms_senders_pace_idx;
