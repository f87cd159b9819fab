-- /messages walks a room in topological order (depth, then ROOMS sequence), so that
-- history fetched later from another server reads in place; backfilled events are
-- history, never new to /sync. Existing rows take their depth from their PDU.
ALTER TABLE "syncapi_room_events" ADD COLUMN "depth" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "syncapi_room_events" ADD COLUMN "backfilled" boolean DEFAULT false NOT NULL;--> statement-breakpoint
UPDATE "syncapi_room_events" SET "depth" = ("pdu"->>'depth')::bigint WHERE jsonb_typeof("pdu"->'depth') = 'number';--> statement-breakpoint
CREATE INDEX "syncapi_room_events_topo_idx" ON "syncapi_room_events" USING btree ("room_id","depth","seq");
