CREATE SEQUENCE "public"."client_data_stream" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "account_data" (
	"user_id" text NOT NULL,
	"room_id" text NOT NULL,
	"type" text NOT NULL,
	"content" jsonb NOT NULL,
	"stream_id" bigint NOT NULL,
	CONSTRAINT "account_data_user_id_room_id_type_pk" PRIMARY KEY("user_id","room_id","type")
);
--> statement-breakpoint
CREATE TABLE "presence" (
	"user_id" text PRIMARY KEY NOT NULL,
	"presence" text NOT NULL,
	"status_msg" text,
	"last_active_at" bigint NOT NULL,
	"stream_id" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "profiles" (
	"user_id" text PRIMARY KEY NOT NULL,
	"display_name" text,
	"avatar_url" text
);
--> statement-breakpoint
CREATE TABLE "room_directory" (
	"room_id" text PRIMARY KEY NOT NULL,
	"visibility" text NOT NULL,
	"updated_at" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "accounts" ADD COLUMN "is_guest" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX "account_data_stream_idx" ON "account_data" USING btree ("user_id","stream_id");