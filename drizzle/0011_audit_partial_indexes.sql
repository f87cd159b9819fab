DROP INDEX "peek_audit_user_idx";--> statement-breakpoint
DROP INDEX "peek_audit_server_idx";--> statement-breakpoint
CREATE INDEX "peek_audit_user_idx" ON "peek_audit" USING btree ("user_id","seq") WHERE "peek_audit"."user_id" is not null;--> statement-breakpoint
CREATE INDEX "peek_audit_server_idx" ON "peek_audit" USING btree ("server_name","seq") WHERE "peek_audit"."server_name" is not null;