// Per-user client data for /sync: presence, account data, receipts and typing notifications.
// Not derived from the streams:
// written directly, each change taking the next `client_data_stream` value, which is what
// a sync token's client-data part counts.
//
// A Postgres sequence hands out values in call order but transactions commit in any order,
// so "the highest value committed" is not "every value below it committed". Writers take
// an exclusive transaction-level advisory lock around taking the value and writing the row,
// so they commit in value order; a reader that takes the same lock shared reads the
// sequence with no write in flight: every value up to it is committed, and any later write
// takes a greater one. That read is the position a /sync answers up to.
import { and, eq, gt, inArray, lte, or, sql, type SQL } from 'drizzle-orm';
import { rowsOf, type Db } from '../store/db.ts';
import { accountData, presence, receipts, typing } from '../store/schema.ts';

/** The advisory lock that orders client-data writes ("peekdc" in ASCII). */
const CLIENT_DATA_LOCK_KEY = 0x7065656b6463;

export type PresenceState = 'online' | 'offline' | 'unavailable';
export const PRESENCE_STATES: readonly PresenceState[] = ['online', 'offline', 'unavailable'];

export type PresenceRow = typeof presence.$inferSelect;

export interface AccountDataRow {
  /** '' for global account data. */
  roomId: string;
  type: string;
  content: Record<string, unknown>;
  streamId: number;
}

export type ReceiptRow = typeof receipts.$inferSelect;

/** Receipt types stored as receipts (m.fully_read is account data). */
export const RECEIPT_TYPES: readonly string[] = ['m.read', 'm.read.private'];

/**
 * The content of one m.receipt event for `rows` (all of one room): event ID → type → user
 * → `{ts, thread_id?}`.
 */
export function receiptContent(rows: readonly ReceiptRow[]): Record<string, Record<string, Record<string, Record<string, unknown>>>> {
  const content: Record<string, Record<string, Record<string, Record<string, unknown>>>> = {};
  for (const r of rows) {
    const byType = (content[r.eventId] ??= {});
    const byUser = (byType[r.receiptType] ??= {});
    byUser[r.userId] = r.threadId === '' ? { ts: r.ts } : { ts: r.ts, thread_id: r.threadId };
  }
  return content;
}

/** A user counts as currently active while their last activity is this recent (and they are online). */
export const CURRENTLY_ACTIVE_MS = 5 * 60_000;

/** The content of an m.presence event (and the answer of GET /presence/{userId}/status). */
export function presenceContent(row: PresenceRow, now: number): Record<string, unknown> {
  const ago = Math.max(0, now - row.lastActiveAt);
  const content: Record<string, unknown> = { presence: row.presence, last_active_ago: ago, currently_active: row.presence === 'online' && ago < CURRENTLY_ACTIVE_MS };
  if (row.statusMsg !== null) content.status_msg = row.statusMsg;
  return content;
}

/** The users who share a joined room with `userId` (current memberships), as SQL for `user_id IN (…)`. */
const sharingUsers = (userId: string) => sql`(
  select o.state_key from syncapi_current_state m
  join syncapi_current_state o on o.room_id = m.room_id and o.type = 'm.room.member' and o.membership = 'join'
  where m.type = 'm.room.member' and m.state_key = ${userId} and m.membership = 'join')`;

export class ClientDataStore {
  constructor(private readonly db: Db) {}

  /** The client_data_stream value up to which every change is committed (0: none yet). */
  async position(): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock_shared(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const [row] = rowsOf<{ v: string | number }>(await tx.execute(sql`select case when is_called then last_value else 0 end as v from client_data_stream`));
      return Number(row?.v ?? 0);
    });
  }

  /** Stores account data (room '' for global); resolves with the change's stream value once committed. */
  async putAccountData(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const [row] = await tx
        .insert(accountData)
        .values({ userId, roomId, type, content, streamId: sql`nextval('client_data_stream')` })
        .onConflictDoUpdate({ target: [accountData.userId, accountData.roomId, accountData.type], set: { content: sql`excluded.content`, streamId: sql`excluded.stream_id` } })
        .returning({ streamId: accountData.streamId });
      return Number(row!.streamId);
    });
  }

  async accountData(userId: string, roomId: string, type: string): Promise<Record<string, unknown> | null> {
    const [row] = await this.db
      .select({ content: accountData.content })
      .from(accountData)
      .where(and(eq(accountData.userId, userId), eq(accountData.roomId, roomId), eq(accountData.type, type)));
    return (row?.content as Record<string, unknown> | undefined) ?? null;
  }

  /**
   * Sets a user's presence and marks them active now. Resolves with the change's stream
   * value, or null when neither the state nor the message changed (then only the activity
   * time moves, and nobody's /sync is told).
   */
  async setPresence(userId: string, state: PresenceState, statusMsg: string | null, now: number): Promise<number | null> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const [prev] = await tx.select().from(presence).where(eq(presence.userId, userId));
      if (prev && prev.presence === state && prev.statusMsg === statusMsg) {
        await tx.update(presence).set({ lastActiveAt: now }).where(eq(presence.userId, userId));
        return null;
      }
      const [row] = await tx
        .insert(presence)
        .values({ userId, presence: state, statusMsg, lastActiveAt: now, streamId: sql`nextval('client_data_stream')` })
        .onConflictDoUpdate({
          target: presence.userId,
          set: { presence: state, statusMsg, lastActiveAt: now, streamId: sql`excluded.stream_id` },
        })
        .returning({ streamId: presence.streamId });
      return Number(row!.streamId);
    });
  }

  async presenceOf(userId: string): Promise<PresenceRow | null> {
    const [row] = await this.db.select().from(presence).where(eq(presence.userId, userId));
    return row ?? null;
  }

  /** Whether the two users share a room both have joined. */
  async shareARoom(a: string, b: string): Promise<boolean> {
    const rows = rowsOf(await this.db.execute(sql`select 1 from ${sharingUsers(a)} s(u) where u = ${b} limit 1`));
    return rows.length > 0;
  }

  /** The users sharing a joined room with `userId`, and `userId` itself. */
  async usersSharingARoom(userId: string): Promise<string[]> {
    const rows = rowsOf<{ u: string }>(await this.db.execute(sql`select distinct u from ${sharingUsers(userId)} s(u)`));
    const users = new Set(rows.map((r) => r.u));
    users.add(userId);
    return [...users];
  }

  /** The user's account data (global and per room) changed in (after, upto]. */
  async accountDataChanges(userId: string, after: number, upto: number): Promise<AccountDataRow[]> {
    if (after >= upto) return [];
    return this.accountDataWhere(and(eq(accountData.userId, userId), gt(accountData.streamId, after), lte(accountData.streamId, upto))!);
  }

  /** All of the user's account data in these rooms, up to `upto`. */
  async roomAccountData(userId: string, roomIds: string[], upto: number): Promise<AccountDataRow[]> {
    if (roomIds.length === 0) return [];
    return this.accountDataWhere(and(eq(accountData.userId, userId), inArray(accountData.roomId, roomIds), lte(accountData.streamId, upto))!);
  }

  /** Account data rows matching `where`, in stream order. */
  private async accountDataWhere(where: SQL): Promise<AccountDataRow[]> {
    const rows = await this.db
      .select({ roomId: accountData.roomId, type: accountData.type, content: accountData.content, streamId: accountData.streamId })
      .from(accountData)
      .where(where)
      .orderBy(accountData.streamId);
    return rows as AccountDataRow[];
  }

  /**
   * Presence /sync shows `userId`: of the users sharing a joined room with them and of
   * themselves, what changed in (after, upto]; and of `alsoUsers` (new room-mates), what
   * they have up to `upto`.
   */
  async presenceChanges(userId: string, after: number, upto: number, alsoUsers: string[] = []): Promise<PresenceRow[]> {
    const changed = after < upto ? and(gt(presence.streamId, after), lte(presence.streamId, upto), or(eq(presence.userId, userId), sql`${presence.userId} in ${sharingUsers(userId)}`)) : undefined;
    const joined = alsoUsers.length > 0 ? and(inArray(presence.userId, alsoUsers), lte(presence.streamId, upto)) : undefined;
    if (!changed && !joined) return [];
    return this.db.select().from(presence).where(or(changed, joined)).orderBy(presence.streamId);
  }

  /**
   * Stores a receipt. Resolves with the change's stream value, or null when the user's
   * receipt of this type and thread already points at this event or a later one: receipts
   * only move forward (as in Synapse), so a client acknowledging an old event again does
   * not wind everyone's view of it back.
   */
  async putReceipt(r: Omit<ReceiptRow, 'streamId'>): Promise<number | null> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const key = and(eq(receipts.roomId, r.roomId), eq(receipts.receiptType, r.receiptType), eq(receipts.userId, r.userId), eq(receipts.threadId, r.threadId));
      const [prev] = await tx.select({ eventSeq: receipts.eventSeq }).from(receipts).where(key);
      if (prev && prev.eventSeq >= r.eventSeq) return null;
      const [row] = await tx
        .insert(receipts)
        .values({ ...r, streamId: sql`nextval('client_data_stream')` })
        .onConflictDoUpdate({
          target: [receipts.roomId, receipts.receiptType, receipts.userId, receipts.threadId],
          set: { eventId: r.eventId, eventSeq: r.eventSeq, ts: r.ts, streamId: sql`excluded.stream_id` },
        })
        .returning({ streamId: receipts.streamId });
      return Number(row!.streamId);
    });
  }

  /**
   * The receipts of these rooms `viewer` may see (a private one only its own): changed in
   * (after, upto], or with `after` null all of them up to `upto`.
   */
  async receiptsOf(roomIds: string[], viewer: string, after: number | null, upto: number): Promise<ReceiptRow[]> {
    if (roomIds.length === 0 || (after !== null && after >= upto)) return [];
    return this.db
      .select()
      .from(receipts)
      .where(
        and(
          inArray(receipts.roomId, roomIds),
          after === null ? undefined : gt(receipts.streamId, after),
          lte(receipts.streamId, upto),
          or(eq(receipts.receiptType, 'm.read'), eq(receipts.userId, viewer)),
        ),
      )
      .orderBy(receipts.streamId);
  }

  /**
   * Sets whether `userId` types in a room: until `untilTs`, or not (0). Resolves with the
   * change's stream value, or null when it changes nothing a reader sees (a stop of someone
   * not typing).
   */
  async setTyping(roomId: string, userId: string, untilTs: number, now: number): Promise<number | null> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const key = and(eq(typing.roomId, roomId), eq(typing.userId, userId));
      if (untilTs === 0) {
        const [prev] = await tx.select({ untilTs: typing.untilTs }).from(typing).where(key);
        if (!prev || prev.untilTs <= now) return null;
      }
      const [row] = await tx
        .insert(typing)
        .values({ roomId, userId, untilTs, streamId: sql`nextval('client_data_stream')` })
        .onConflictDoUpdate({ target: [typing.roomId, typing.userId], set: { untilTs, streamId: sql`excluded.stream_id` } })
        .returning({ streamId: typing.streamId });
      return Number(row!.streamId);
    });
  }

  /**
   * The end of a typing spell: when the user still types until exactly `untilTs` (no later
   * start or stop replaced it), the row takes a new stream value so that long-polls learn
   * the list changed. Resolves with it, or null.
   */
  async typingEnded(roomId: string, userId: string, untilTs: number): Promise<number | null> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const [row] = await tx
        .update(typing)
        .set({ untilTs: 0, streamId: sql`nextval('client_data_stream')` })
        .where(and(eq(typing.roomId, roomId), eq(typing.userId, userId), eq(typing.untilTs, untilTs)))
        .returning({ streamId: typing.streamId });
      return row ? Number(row.streamId) : null;
    });
  }

  /**
   * Typing in these rooms: per room whose list changed in (after, upto] (every room with
   * someone typing when `after` is null), who types at `now`.
   */
  async typingOf(roomIds: string[], after: number | null, upto: number, now: number): Promise<Map<string, string[]>> {
    const lists = new Map<string, string[]>();
    if (roomIds.length === 0 || (after !== null && after >= upto)) return lists;
    const changed =
      after === null
        ? roomIds
        : [
            ...new Set(
              (
                await this.db
                  .selectDistinct({ roomId: typing.roomId })
                  .from(typing)
                  .where(and(inArray(typing.roomId, roomIds), gt(typing.streamId, after), lte(typing.streamId, upto)))
              ).map((r) => r.roomId),
            ),
          ];
    if (changed.length === 0) return lists;
    const rows = await this.db
      .select({ roomId: typing.roomId, userId: typing.userId })
      .from(typing)
      .where(and(inArray(typing.roomId, changed), gt(typing.untilTs, now)))
      .orderBy(typing.userId);
    if (after !== null) for (const r of changed) lists.set(r, []);
    for (const r of rows) lists.set(r.roomId, [...(lists.get(r.roomId) ?? []), r.userId]);
    return lists;
  }

  /**
   * Writes the end of every typing spell whose time is over but that still counts as
   * running (its process stopped before its timer fired): each takes a new stream value.
   * Resolves with the rooms and the highest value, or null when there were none.
   */
  async endLapsedTyping(now: number): Promise<{ rooms: string[]; streamId: number } | null> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CLIENT_DATA_LOCK_KEY}::bigint)`);
      const rows = await tx
        .update(typing)
        .set({ untilTs: 0, streamId: sql`nextval('client_data_stream')` })
        .where(and(gt(typing.untilTs, 0), lte(typing.untilTs, now)))
        .returning({ roomId: typing.roomId, streamId: typing.streamId });
      if (rows.length === 0) return null;
      return { rooms: [...new Set(rows.map((r) => r.roomId))], streamId: Math.max(...rows.map((r) => Number(r.streamId))) };
    });
  }

  /**
   * Who changes in (after, upto] concern (a roles-split process that did not take the writes
   * wakes its long-polls with this): account data changes its owner; a presence change its
   * user and everyone sharing a room with them.
   */
  async concernedBy(after: number, upto: number): Promise<{ users: Set<string>; rooms: Set<string> }> {
    const users = new Set<string>();
    const rooms = new Set<string>();
    if (after >= upto) return { users, rooms };
    const result = await this.db.execute(sql`
      select user_id as u from account_data where stream_id > ${after} and stream_id <= ${upto}
      union
      select user_id from presence where stream_id > ${after} and stream_id <= ${upto}
      union
      select o.state_key from presence p
      join syncapi_current_state m on m.type = 'm.room.member' and m.state_key = p.user_id and m.membership = 'join'
      join syncapi_current_state o on o.room_id = m.room_id and o.type = 'm.room.member' and o.membership = 'join'
      where p.stream_id > ${after} and p.stream_id <= ${upto}`);
    for (const r of rowsOf<{ u: string }>(result)) users.add(r.u);
    // Receipts and typing concern their room: its members' long-polls and its previews.
    const changedRooms = await this.db.execute(sql`
      select room_id as r from receipts where stream_id > ${after} and stream_id <= ${upto}
      union
      select room_id from typing where stream_id > ${after} and stream_id <= ${upto}
      union
      select m.room_id from presence p
      join syncapi_current_state m on m.type = 'm.room.member' and m.state_key = p.user_id and m.membership = 'join'
      where p.stream_id > ${after} and p.stream_id <= ${upto}`);
    for (const r of rowsOf<{ r: string }>(changedRooms)) rooms.add(r.r);
    return { users, rooms };
  }
}
