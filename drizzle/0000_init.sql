CREATE TABLE "federationsender_inbound_peeks" (
	"room_id" text NOT NULL,
	"server_name" text NOT NULL,
	"peek_id" text NOT NULL,
	"shard" integer NOT NULL,
	"created_at" bigint NOT NULL,
	"renewed_at" bigint NOT NULL,
	"renewal_interval_ms" bigint NOT NULL,
	"expires_at" bigint NOT NULL,
	"room_seq" bigint NOT NULL,
	"started_seq" bigint NOT NULL,
	CONSTRAINT "federationsender_inbound_peeks_room_id_server_name_peek_id_pk" PRIMARY KEY("room_id","server_name","peek_id")
);
--> statement-breakpoint
CREATE TABLE "federationsender_outbound_peeks" (
	"room_id" text NOT NULL,
	"server_name" text NOT NULL,
	"peek_id" text NOT NULL,
	"shard" integer NOT NULL,
	"created_at" bigint NOT NULL,
	"renewed_at" bigint NOT NULL,
	"renewal_interval_ms" bigint NOT NULL,
	"expires_at" bigint NOT NULL,
	"started_seq" bigint NOT NULL,
	CONSTRAINT "federationsender_outbound_peeks_room_id_server_name_pk" PRIMARY KEY("room_id","server_name")
);
--> statement-breakpoint
CREATE TABLE "peek_audit" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"room_id" text NOT NULL,
	"shard" integer NOT NULL,
	"event_type" text NOT NULL,
	"kind" text NOT NULL,
	"user_id" text,
	"device_id" text,
	"server_name" text,
	"peek_id" text,
	"at" bigint NOT NULL,
	"expires_at" bigint,
	"renewal_interval_ms" bigint,
	"reason" text
);
--> statement-breakpoint
CREATE TABLE "projection_checkpoints" (
	"projection" text NOT NULL,
	"stream" text NOT NULL,
	"seq" bigint NOT NULL,
	CONSTRAINT "projection_checkpoints_projection_stream_pk" PRIMARY KEY("projection","stream")
);
--> statement-breakpoint
CREATE TABLE "syncapi_peeks" (
	"room_id" text NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"shard" integer NOT NULL,
	"started_seq" bigint NOT NULL,
	"started_at" bigint NOT NULL,
	"renewed_at" bigint NOT NULL,
	"expires_at" bigint,
	"room_seq" bigint NOT NULL,
	"updated_seq" bigint NOT NULL,
	"ended_seq" bigint,
	"ended_at" bigint,
	"end_reason" text,
	CONSTRAINT "syncapi_peeks_room_id_user_id_device_id_pk" PRIMARY KEY("room_id","user_id","device_id")
);
--> statement-breakpoint
CREATE INDEX "federationsender_inbound_peeks_server_idx" ON "federationsender_inbound_peeks" USING btree ("server_name");--> statement-breakpoint
CREATE INDEX "federationsender_inbound_peeks_due_idx" ON "federationsender_inbound_peeks" USING btree ("shard","expires_at");--> statement-breakpoint
CREATE INDEX "federationsender_outbound_peeks_due_idx" ON "federationsender_outbound_peeks" USING btree ("shard","expires_at");--> statement-breakpoint
CREATE INDEX "peek_audit_room_idx" ON "peek_audit" USING btree ("room_id","seq");--> statement-breakpoint
CREATE INDEX "peek_audit_user_idx" ON "peek_audit" USING btree ("user_id","seq");--> statement-breakpoint
CREATE INDEX "peek_audit_server_idx" ON "peek_audit" USING btree ("server_name","seq");--> statement-breakpoint
CREATE INDEX "peek_audit_at_idx" ON "peek_audit" USING btree ("at");--> statement-breakpoint
CREATE INDEX "syncapi_peeks_device_idx" ON "syncapi_peeks" USING btree ("user_id","device_id");--> statement-breakpoint
CREATE INDEX "syncapi_peeks_due_idx" ON "syncapi_peeks" USING btree ("shard","expires_at");