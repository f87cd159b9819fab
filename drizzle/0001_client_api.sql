CREATE TABLE "access_tokens" (
	"token_hash" text PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "accounts" (
	"user_id" text PRIMARY KEY NOT NULL,
	"password_hash" text,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "devices" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"display_name" text,
	"created_at" bigint NOT NULL,
	"last_seen_at" bigint NOT NULL,
	CONSTRAINT "devices_user_id_device_id_pk" PRIMARY KEY("user_id","device_id")
);
--> statement-breakpoint
CREATE TABLE "filters" (
	"user_id" text NOT NULL,
	"filter_id" text NOT NULL,
	"filter" jsonb NOT NULL,
	CONSTRAINT "filters_user_id_filter_id_pk" PRIMARY KEY("user_id","filter_id")
);
--> statement-breakpoint
CREATE TABLE "room_aliases" (
	"alias" text PRIMARY KEY NOT NULL,
	"room_id" text NOT NULL,
	"creator" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "syncapi_current_state" (
	"room_id" text NOT NULL,
	"type" text NOT NULL,
	"state_key" text NOT NULL,
	"event_id" text NOT NULL,
	"seq" bigint NOT NULL,
	"membership" text,
	"content" jsonb NOT NULL,
	CONSTRAINT "syncapi_current_state_room_id_type_state_key_pk" PRIMARY KEY("room_id","type","state_key")
);
--> statement-breakpoint
CREATE TABLE "syncapi_room_events" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"room_id" text NOT NULL,
	"event_id" text NOT NULL,
	"type" text NOT NULL,
	"state_key" text,
	"sender" text NOT NULL,
	"origin_server_ts" bigint NOT NULL,
	"pdu" jsonb NOT NULL
);
--> statement-breakpoint
CREATE INDEX "access_tokens_device_idx" ON "access_tokens" USING btree ("user_id","device_id");--> statement-breakpoint
CREATE INDEX "syncapi_current_state_member_idx" ON "syncapi_current_state" USING btree ("state_key","type");--> statement-breakpoint
CREATE INDEX "syncapi_room_events_room_idx" ON "syncapi_room_events" USING btree ("room_id","seq");--> statement-breakpoint
CREATE UNIQUE INDEX "syncapi_room_events_event_idx" ON "syncapi_room_events" USING btree ("event_id");