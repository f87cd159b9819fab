ALTER TABLE "syncapi_peeks" ADD COLUMN "ended_room_seq" bigint;--> statement-breakpoint
ALTER TABLE "syncapi_peeks" ADD COLUMN "prev_started_seq" bigint;--> statement-breakpoint
ALTER TABLE "syncapi_peeks" ADD COLUMN "prev_ended_seq" bigint;--> statement-breakpoint
ALTER TABLE "syncapi_room_events" ADD COLUMN "txn_device_id" text;--> statement-breakpoint
ALTER TABLE "syncapi_room_events" ADD COLUMN "txn_id" text;