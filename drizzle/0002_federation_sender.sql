CREATE TABLE "federationsender_outbox" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"destination" text NOT NULL,
	"kind" text NOT NULL,
	"room_id" text NOT NULL,
	"peek_id" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "federationsender_pending_txns" (
	"destination" text PRIMARY KEY NOT NULL,
	"txn_id" text NOT NULL,
	"body" jsonb NOT NULL,
	"cursors" jsonb NOT NULL,
	"outbox_seqs" jsonb NOT NULL,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "federationsender_room_cursors" (
	"destination" text NOT NULL,
	"room_id" text NOT NULL,
	"sent_seq" bigint NOT NULL,
	CONSTRAINT "federationsender_room_cursors_destination_room_id_pk" PRIMARY KEY("destination","room_id")
);
--> statement-breakpoint
CREATE INDEX "federationsender_outbox_destination_idx" ON "federationsender_outbox" USING btree ("destination","seq");