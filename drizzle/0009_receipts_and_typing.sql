CREATE TABLE "receipts" (
	"room_id" text NOT NULL,
	"receipt_type" text NOT NULL,
	"user_id" text NOT NULL,
	"thread_id" text NOT NULL,
	"event_id" text NOT NULL,
	"event_seq" bigint NOT NULL,
	"ts" bigint NOT NULL,
	"stream_id" bigint NOT NULL,
	CONSTRAINT "receipts_room_id_receipt_type_user_id_thread_id_pk" PRIMARY KEY("room_id","receipt_type","user_id","thread_id")
);
--> statement-breakpoint
CREATE TABLE "typing" (
	"room_id" text NOT NULL,
	"user_id" text NOT NULL,
	"until_ts" bigint NOT NULL,
	"stream_id" bigint NOT NULL,
	CONSTRAINT "typing_room_id_user_id_pk" PRIMARY KEY("room_id","user_id")
);
--> statement-breakpoint
CREATE INDEX "receipts_room_stream_idx" ON "receipts" USING btree ("room_id","stream_id");--> statement-breakpoint
CREATE INDEX "receipts_stream_idx" ON "receipts" USING btree ("stream_id");--> statement-breakpoint
CREATE INDEX "typing_room_stream_idx" ON "typing" USING btree ("room_id","stream_id");--> statement-breakpoint
CREATE INDEX "typing_stream_idx" ON "typing" USING btree ("stream_id");--> statement-breakpoint
CREATE INDEX "presence_stream_idx" ON "presence" USING btree ("stream_id");