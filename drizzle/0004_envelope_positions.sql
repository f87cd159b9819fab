-- Envelopes: one log message per decision, and read models in positions
-- (stream sequence * 1000 + index in the envelope) instead of raw stream sequences.
-- The read models are derived data: empty them and let the projections rebuild them from
-- the log on start. The federation sender's delivery state is not derived: convert it.
TRUNCATE "syncapi_peeks", "federationsender_inbound_peeks", "federationsender_outbound_peeks", "peek_audit", "syncapi_room_events", "syncapi_current_state";--> statement-breakpoint
DELETE FROM "projection_checkpoints" WHERE "projection" <> 'federation_outbox';--> statement-breakpoint
UPDATE "projection_checkpoints" SET "seq" = "seq" * 1000 + 999 WHERE "projection" = 'federation_outbox' AND "seq" > 0;--> statement-breakpoint
UPDATE "federationsender_outbox" SET "seq" = "seq" * 1000;--> statement-breakpoint
UPDATE "federationsender_room_cursors" SET "sent_seq" = "sent_seq" * 1000 + 999 WHERE "sent_seq" > 0;--> statement-breakpoint
DELETE FROM "federationsender_pending_txns";
