DROP INDEX "federationsender_inbound_peeks_server_idx";--> statement-breakpoint
DROP INDEX "syncapi_peeks_device_idx";--> statement-breakpoint
DROP INDEX "syncapi_peeks_due_idx";--> statement-breakpoint
CREATE INDEX "federationsender_inbound_peeks_server_idx" ON "federationsender_inbound_peeks" USING btree ("server_name","room_id","peek_id");--> statement-breakpoint
CREATE INDEX "syncapi_peeks_device_idx" ON "syncapi_peeks" USING btree ("user_id","device_id","room_id");--> statement-breakpoint
CREATE INDEX "syncapi_peeks_due_idx" ON "syncapi_peeks" USING btree ("expires_at") WHERE "syncapi_peeks"."ended_seq" is null;