// Reads peek_audit: who peeked a room, when, and why it ended. Paged by stream sequence.
import { and, asc, eq, gt, gte, lte, type SQL } from 'drizzle-orm';
import { InvalidInputError } from '../actors/errors.ts';
import { isValidDeviceId, isValidRoomId, isValidServerName, isValidUserId } from '../events/ids.ts';
import type { Db } from '../store/db.ts';
import { peekAudit } from '../store/schema.ts';

export interface AuditQuery {
  roomId?: string;
  userId?: string;
  deviceId?: string;
  serverName?: string;
  since?: number;
  until?: number;
  /** Return rows with a sequence greater than this (the previous page's next_batch). */
  after?: number;
  limit: number;
}

export interface AuditEntry {
  seq: number;
  room_id: string;
  event: string;
  kind: string;
  user_id?: string;
  device_id?: string;
  server_name?: string;
  peek_id?: string;
  at: number;
  expires_at?: number;
  renewal_interval_ms?: number;
  reason?: string;
}

export const MAX_AUDIT_PAGE = 1000;

/** Parses a time as ms since the epoch or an ISO 8601 date. */
export function parseTime(raw: string, name: string): number {
  const n = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  // A safe integer: anything larger cannot be a time and would overflow the bigint column.
  if (!Number.isSafeInteger(n)) throw new InvalidInputError(`${name} must be ms since the epoch or an ISO 8601 time`);
  return n;
}

/** The room_id, user_id and server_name a query names, each checked (InvalidInputError when malformed). */
export function parseSubjectFilters(q: Record<string, string | undefined>): { roomId?: string; userId?: string; serverName?: string } {
  const out: { roomId?: string; userId?: string; serverName?: string } = {};
  if (q.room_id !== undefined) {
    if (!isValidRoomId(q.room_id)) throw new InvalidInputError('malformed room_id');
    out.roomId = q.room_id;
  }
  if (q.user_id !== undefined) {
    if (!isValidUserId(q.user_id)) throw new InvalidInputError('malformed user_id');
    out.userId = q.user_id;
  }
  if (q.server_name !== undefined) {
    if (!isValidServerName(q.server_name)) throw new InvalidInputError('malformed server_name');
    out.serverName = q.server_name;
  }
  return out;
}

export function parseAuditQuery(q: Record<string, string | undefined>): AuditQuery {
  const out: AuditQuery = { limit: 100, ...parseSubjectFilters(q) };
  if (q.device_id !== undefined) {
    if (!isValidDeviceId(q.device_id)) throw new InvalidInputError('malformed device_id');
    out.deviceId = q.device_id;
  }
  if (!out.roomId && !out.userId && !out.serverName) throw new InvalidInputError('give room_id, user_id or server_name');
  if (out.deviceId && !out.userId) throw new InvalidInputError('device_id needs user_id');
  if (q.since !== undefined) out.since = parseTime(q.since, 'since');
  if (q.until !== undefined) out.until = parseTime(q.until, 'until');
  if (q.from !== undefined) {
    const after = /^\d+$/.test(q.from) ? Number(q.from) : NaN;
    if (!Number.isSafeInteger(after)) throw new InvalidInputError('from must be a next_batch value');
    out.after = after;
  }
  if (q.limit !== undefined) {
    const n = Number(q.limit);
    if (!Number.isInteger(n) || n < 1) throw new InvalidInputError('limit must be a positive integer');
    out.limit = Math.min(n, MAX_AUDIT_PAGE);
  }
  return out;
}

export async function queryAudit(db: Db, q: AuditQuery): Promise<{ events: AuditEntry[]; next_batch?: string }> {
  const where: (SQL | undefined)[] = [
    q.roomId ? eq(peekAudit.roomId, q.roomId) : undefined,
    q.userId ? eq(peekAudit.userId, q.userId) : undefined,
    q.deviceId ? eq(peekAudit.deviceId, q.deviceId) : undefined,
    q.serverName ? eq(peekAudit.serverName, q.serverName) : undefined,
    q.since !== undefined ? gte(peekAudit.at, q.since) : undefined,
    q.until !== undefined ? lte(peekAudit.at, q.until) : undefined,
    q.after !== undefined ? gt(peekAudit.seq, q.after) : undefined,
  ];
  const rows = await db
    .select()
    .from(peekAudit)
    .where(and(...where))
    .orderBy(asc(peekAudit.seq))
    .limit(q.limit + 1);
  const page = rows.slice(0, q.limit);
  const events = page.map((r) => {
    const e: AuditEntry = { seq: r.seq, room_id: r.roomId, event: r.eventType, kind: r.kind, at: r.at };
    if (r.userId) e.user_id = r.userId;
    if (r.deviceId) e.device_id = r.deviceId;
    if (r.serverName) e.server_name = r.serverName;
    if (r.peekId) e.peek_id = r.peekId;
    if (r.expiresAt !== null) e.expires_at = r.expiresAt;
    if (r.renewalIntervalMs !== null) e.renewal_interval_ms = r.renewalIntervalMs;
    if (r.reason) e.reason = r.reason;
    return e;
  });
  return rows.length > q.limit ? { events, next_batch: String(page.at(-1)!.seq) } : { events };
}
