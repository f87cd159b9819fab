-- Log messages a projection cannot decode are recorded here, in the transaction that moves
-- its checkpoint past them, instead of being skipped without a trace (or stalling the stream).
CREATE TABLE "projection_quarantine" (
	"projection" text NOT NULL,
	"stream" text NOT NULL,
	"stream_seq" bigint NOT NULL,
	"subject" text NOT NULL,
	"payload" "bytea" NOT NULL,
	"payload_bytes" integer NOT NULL,
	"error" text NOT NULL,
	"quarantined_at" bigint NOT NULL,
	CONSTRAINT "projection_quarantine_projection_stream_stream_seq_pk" PRIMARY KEY("projection","stream","stream_seq")
);
