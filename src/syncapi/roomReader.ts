// Reads the sync projection of ROOMS: timelines, state at a position, memberships.
// Positions are ROOMS stream sequences.
import { and, asc, desc, eq, gt, inArray, like, lt, lte, not, notInArray, or, sql, type SQL } from 'drizzle-orm';
import type { Pdu } from '../events/roomEvents.ts';
import { rowsOf, type Db } from '../store/db.ts';
import { syncapiCurrentState, syncapiRoomEvents } from '../store/schema.ts';
import { toClientEvent, type ClientEvent } from './clientEvents.ts';
import { ImmutableReadCache } from './memo.ts';
import { likePatterns, selects, type EventFilter } from './syncFilter.ts';
import { positionAfter, type PaginationToken, type TopoPosition } from './syncToken.ts';
import { visibilityJudge, visibilityOf, type VisibilityFacts } from './visibility.ts';

export interface StoredEvent {
  seq: number;
  eventId: string;
  pdu: Pdu;
  txnDeviceId?: string | null;
  txnId?: string | null;
}

/** Events that arrived as the room went on (not history fetched later): what /sync shows. */
const live = eq(syncapiRoomEvents.backfilled, false);

const EVENT_COLUMNS = {
  seq: syncapiRoomEvents.seq,
  eventId: syncapiRoomEvents.eventId,
  pdu: syncapiRoomEvents.pdu,
  txnDeviceId: syncapiRoomEvents.txnDeviceId,
  txnId: syncapiRoomEvents.txnId,
};

export interface TimelineSlice {
  events: StoredEvent[];
  /** True when older events in the requested range were left out. */
  limited: boolean;
}

export class RoomReader {
  /** The read-model database (also what client data is read from: src/syncapi/clientData.ts). */
  constructor(readonly db: Db) {}

  async roomExists(roomId: string): Promise<boolean> {
    const rows = await this.db
      .select({ s: syncapiCurrentState.seq })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.create')));
    return rows.length > 0;
  }

  async stateContent(roomId: string, type: string, stateKey = ''): Promise<Record<string, unknown> | null> {
    const [row] = await this.db
      .select({ content: syncapiCurrentState.content })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, type), eq(syncapiCurrentState.stateKey, stateKey)));
    return (row?.content as Record<string, unknown>) ?? null;
  }

  async historyVisibility(roomId: string): Promise<string> {
    const c = await this.stateContent(roomId, 'm.room.history_visibility');
    return typeof c?.history_visibility === 'string' ? c.history_visibility : 'shared';
  }

  async membership(roomId: string, userId: string): Promise<string | null> {
    const [row] = await this.db
      .select({ m: syncapiCurrentState.membership })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.member'), eq(syncapiCurrentState.stateKey, userId)));
    return row?.m ?? null;
  }

  /** Every room where the user has a membership, with it and the sequence it changed at. */
  async membershipsOf(userId: string): Promise<{ roomId: string; membership: string; seq: number }[]> {
    const rows = await this.db
      .select({ roomId: syncapiCurrentState.roomId, membership: syncapiCurrentState.membership, seq: syncapiCurrentState.seq })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.stateKey, userId), eq(syncapiCurrentState.type, 'm.room.member')));
    return rows.map((r) => ({ roomId: r.roomId, membership: r.membership ?? 'leave', seq: r.seq }));
  }

  async joinedMembers(roomId: string): Promise<string[]> {
    const rows = await this.db
      .select({ u: syncapiCurrentState.stateKey })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.member'), eq(syncapiCurrentState.membership, 'join')));
    return rows.map((r) => r.u);
  }

  async currentState(roomId: string): Promise<StoredEvent[]> {
    const rows = await this.db
      .select(EVENT_COLUMNS)
      .from(syncapiCurrentState)
      .innerJoin(syncapiRoomEvents, eq(syncapiRoomEvents.seq, syncapiCurrentState.seq))
      .where(eq(syncapiCurrentState.roomId, roomId))
      .orderBy(asc(syncapiRoomEvents.seq));
    return rows as StoredEvent[];
  }

  /** The current member events of `userIds` in the room (those who have one). */
  async currentMembers(roomId: string, userIds: string[]): Promise<StoredEvent[]> {
    if (userIds.length === 0) return [];
    const rows = await this.db
      .select(EVENT_COLUMNS)
      .from(syncapiCurrentState)
      .innerJoin(syncapiRoomEvents, eq(syncapiRoomEvents.seq, syncapiCurrentState.seq))
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.member'), inArray(syncapiCurrentState.stateKey, userIds)));
    return rows as StoredEvent[];
  }

  /**
   * The member events of `userIds` as they stood just before `beforeSeq` (those who had
   * one): from the current state where it has not changed since (one indexed read), from
   * the state then for the rest.
   */
  async membersBefore(roomId: string, beforeSeq: number, userIds: string[]): Promise<StoredEvent[]> {
    const current = (await this.currentMembers(roomId, userIds)).filter((e) => e.seq < beforeSeq);
    const found = new Set(current.map((e) => e.pdu.state_key as string));
    const rest = new Set(userIds.filter((u) => !found.has(u)));
    if (rest.size === 0) return current;
    const then = await this.stateBefore(roomId, beforeSeq);
    return [...current, ...then.filter((e) => e.pdu.type === 'm.room.member' && rest.has(e.pdu.state_key as string))];
  }

  async eventById(eventId: string): Promise<StoredEvent | null> {
    const [row] = await this.db.select(EVENT_COLUMNS).from(syncapiRoomEvents).where(eq(syncapiRoomEvents.eventId, eventId));
    return (row as StoredEvent) ?? null;
  }

  /** The newest events with afterSeq < seq ≤ uptoSeq, at most `limit`, oldest first. */
  private readonly timelines = new ImmutableReadCache<TimelineSlice>();
  private readonly states = new ImmutableReadCache<StoredEvent[]>();

  /**
   * The newest events with afterSeq < seq ≤ uptoSeq (uptoSeq committed), at most `limit`,
   * oldest first; with a filter, only the events of the types and senders it keeps (the
   * limit counts those).
   */
  timeline(roomId: string, afterSeq: number, uptoSeq: number, limit: number, filter?: EventFilter): Promise<TimelineSlice> {
    const which = filter && selects(filter) ? filter : undefined;
    const key = `${roomId}\u0000${afterSeq}\u0000${uptoSeq}\u0000${limit}${which ? `\u0000${JSON.stringify([which.types, which.notTypes, which.senders, which.notSenders, which.containsUrl])}` : ''}`;
    return this.timelines.get(key, () => this.readTimeline(roomId, afterSeq, uptoSeq, limit, which));
  }

  private async readTimeline(roomId: string, afterSeq: number, uptoSeq: number, limit: number, filter?: EventFilter): Promise<TimelineSlice> {
    const rows = await this.db
      .select(EVENT_COLUMNS)
      .from(syncapiRoomEvents)
      .where(and(eq(syncapiRoomEvents.roomId, roomId), gt(syncapiRoomEvents.seq, afterSeq), lte(syncapiRoomEvents.seq, uptoSeq), live, filter ? filterCondition(filter) : undefined))
      .orderBy(desc(syncapiRoomEvents.seq))
      .limit(limit + 1);
    const limited = rows.length > limit;
    return { events: (rows.slice(0, limit) as StoredEvent[]).reverse(), limited };
  }

  private readonly withEvents = new ImmutableReadCache<Set<string>>();

  /** Rooms among `roomIds` with events in (afterSeq, uptoSeq] (uptoSeq committed: the answer never changes). */
  roomsWithEvents(roomIds: string[], afterSeq: number, uptoSeq: number): Promise<Set<string>> {
    if (roomIds.length === 0 || afterSeq >= uptoSeq) return Promise.resolve(new Set());
    if (roomIds.length > 20) return this.readRoomsWithEvents(roomIds, afterSeq, uptoSeq);
    const key = `${[...roomIds].sort().join('\u0001')}\u0000${afterSeq}\u0000${uptoSeq}`;
    return this.withEvents.get(key, () => this.readRoomsWithEvents(roomIds, afterSeq, uptoSeq));
  }

  private async readRoomsWithEvents(roomIds: string[], afterSeq: number, uptoSeq: number): Promise<Set<string>> {
    const rows = await this.db
      .selectDistinct({ roomId: syncapiRoomEvents.roomId })
      .from(syncapiRoomEvents)
      .where(and(inArray(syncapiRoomEvents.roomId, roomIds), gt(syncapiRoomEvents.seq, afterSeq), lte(syncapiRoomEvents.seq, uptoSeq), live));
    return new Set(rows.map((r) => r.roomId));
  }

  /** The room's state just before `beforeSeq` (exclusive), optionally only entries set after `sinceSeq`. */
  stateBefore(roomId: string, beforeSeq: number, sinceSeq = 0): Promise<StoredEvent[]> {
    return this.states.get(`${roomId}\u0000${beforeSeq}\u0000${sinceSeq}`, () => this.readStateBefore(roomId, beforeSeq, sinceSeq));
  }

  private async readStateBefore(roomId: string, beforeSeq: number, sinceSeq: number): Promise<StoredEvent[]> {
    const result = await this.db.execute(sql`
      select seq, event_id as "eventId", pdu from (
        select distinct on (type, state_key) seq, event_id, pdu
        from syncapi_room_events
        where room_id = ${roomId} and state_key is not null and seq < ${beforeSeq} and not backfilled
        order by type, state_key, seq desc
      ) s where seq > ${sinceSeq} order by seq`);
    return rowsOf<{ seq: string | number; eventId: string; pdu: Pdu }>(result).map((r) => ({ seq: Number(r.seq), eventId: r.eventId, pdu: r.pdu }));
  }

  /**
   * Per room: the first event after `afterSeq` (and at most `uptoSeq`) that ends what a
   * peek may see — history visibility no longer `world_readable`, or encryption turned on.
   * Rooms without one are left out of the answer.
   */
  private readonly horizons = new ImmutableReadCache<Map<string, number>>();

  peekHorizons(rooms: { roomId: string; afterSeq: number }[], uptoSeq: number): Promise<Map<string, number>> {
    if (rooms.length === 0 || rooms.length > 20) return this.readPeekHorizons(rooms, uptoSeq);
    const key = `${rooms
      .map((r) => `${r.roomId}\u0001${r.afterSeq}`)
      .sort()
      .join('\u0002')}\u0000${uptoSeq}`;
    return this.horizons.get(key, () => this.readPeekHorizons(rooms, uptoSeq));
  }

  private async readPeekHorizons(rooms: { roomId: string; afterSeq: number }[], uptoSeq: number): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (rooms.length === 0) return out;
    const after = new Map(rooms.map((r) => [r.roomId, r.afterSeq]));
    const lowest = Math.min(...rooms.map((r) => r.afterSeq));
    const rows = await this.db
      .select({ roomId: syncapiRoomEvents.roomId, seq: syncapiRoomEvents.seq, type: syncapiRoomEvents.type, pdu: syncapiRoomEvents.pdu })
      .from(syncapiRoomEvents)
      .where(
        and(
          inArray(syncapiRoomEvents.roomId, [...after.keys()]),
          gt(syncapiRoomEvents.seq, lowest),
          lte(syncapiRoomEvents.seq, uptoSeq),
          eq(syncapiRoomEvents.stateKey, ''),
          inArray(syncapiRoomEvents.type, ['m.room.history_visibility', 'm.room.encryption']),
          live,
        ),
      )
      .orderBy(asc(syncapiRoomEvents.seq));
    for (const r of rows) {
      if (out.has(r.roomId) || r.seq <= after.get(r.roomId)!) continue;
      if (endsPeeking(r.pdu as Pdu)) out.set(r.roomId, r.seq);
    }
    return out;
  }

  /** The newest event of the room in (afterSeq, uptoSeq] created at or before `ts` (afterSeq when none). */
  async lastSeqAtOrBefore(roomId: string, afterSeq: number, uptoSeq: number, ts: number): Promise<number> {
    const [row] = await this.db
      .select({ seq: syncapiRoomEvents.seq })
      .from(syncapiRoomEvents)
      .where(and(eq(syncapiRoomEvents.roomId, roomId), gt(syncapiRoomEvents.seq, afterSeq), lte(syncapiRoomEvents.seq, uptoSeq), lte(syncapiRoomEvents.originServerTs, ts), live))
      .orderBy(desc(syncapiRoomEvents.seq))
      .limit(1);
    return row?.seq ?? afterSeq;
  }

  /** Whether the user joined the room (a join membership event) in (afterSeq, uptoSeq]. */
  async joinedBetween(roomId: string, userId: string, afterSeq: number, uptoSeq: number): Promise<boolean> {
    if (afterSeq >= uptoSeq) return false;
    const rows = await this.db
      .select({ seq: syncapiRoomEvents.seq })
      .from(syncapiRoomEvents)
      .where(
        and(
          eq(syncapiRoomEvents.roomId, roomId),
          eq(syncapiRoomEvents.type, 'm.room.member'),
          eq(syncapiRoomEvents.stateKey, userId),
          gt(syncapiRoomEvents.seq, afterSeq),
          lte(syncapiRoomEvents.seq, uptoSeq),
          sql`${syncapiRoomEvents.pdu}->'content'->>'membership' = 'join'`,
          live,
        ),
      )
      .limit(1);
    return rows.length > 0;
  }

  /**
   * Pagination for /messages in topological order (depth, then sequence): from the
   * position `from`, older events (b, newest first) or it and newer (f, oldest first);
   * `to` bounds the walk (b: events at or after it; f: events before it).
   */
  async page(roomId: string, from: TopoPosition, dir: 'b' | 'f', limit: number, to?: TopoPosition): Promise<StoredEvent[]> {
    const depth = syncapiRoomEvents.depth;
    const at = (p: TopoPosition) => sql`(${p.depth}::bigint, ${p.seq}::bigint)`;
    const pos = sql`(${depth}, ${syncapiRoomEvents.seq})`;
    const where =
      dir === 'b'
        ? and(eq(syncapiRoomEvents.roomId, roomId), sql`${pos} < ${at(from)}`, to ? sql`${pos} >= ${at(to)}` : undefined)
        : and(eq(syncapiRoomEvents.roomId, roomId), sql`${pos} >= ${at(from)}`, to ? sql`${pos} < ${at(to)}` : undefined);
    const rows = await this.db
      .select(EVENT_COLUMNS)
      .from(syncapiRoomEvents)
      .where(where)
      .orderBy(...(dir === 'b' ? [desc(depth), desc(syncapiRoomEvents.seq)] : [asc(depth), asc(syncapiRoomEvents.seq)]))
      .limit(limit);
    return rows as StoredEvent[];
  }

  /**
   * A pagination token as a topological position: a stream position (everything with a
   * lower sequence is before it) becomes the place just after the newest such event.
   */
  async positionOf(roomId: string, token: PaginationToken): Promise<TopoPosition> {
    if ('topo' in token) return token.topo;
    const [row] = await this.db
      .select({ seq: syncapiRoomEvents.seq, pdu: syncapiRoomEvents.pdu })
      .from(syncapiRoomEvents)
      .where(and(eq(syncapiRoomEvents.roomId, roomId), lt(syncapiRoomEvents.seq, token.stream), live))
      .orderBy(desc(syncapiRoomEvents.seq))
      .limit(1);
    return row ? positionAfter({ seq: row.seq, pdu: row.pdu as Pdu }) : { depth: 0, seq: 0 };
  }

  /** The position after the room's last event in topological order (where backwards paging starts). */
  async endPosition(roomId: string): Promise<TopoPosition> {
    const depth = syncapiRoomEvents.depth;
    const [row] = await this.db
      .select({ seq: syncapiRoomEvents.seq, pdu: syncapiRoomEvents.pdu })
      .from(syncapiRoomEvents)
      .where(eq(syncapiRoomEvents.roomId, roomId))
      .orderBy(desc(depth), desc(syncapiRoomEvents.seq))
      .limit(1);
    return row ? positionAfter({ seq: row.seq, pdu: row.pdu as Pdu }) : { depth: 0, seq: 0 };
  }

  private readonly facts = new ImmutableReadCache<VisibilityFacts>(5000);

  /**
   * What history visibility is judged on (src/syncapi/visibility.ts): the room's
   * m.room.history_visibility changes and the viewer's membership changes. With `uptoSeq`
   * (a committed position) only changes up to it, and the answer is cached; without, all.
   */
  visibilityFacts(roomId: string, viewer: string | null, uptoSeq?: number): Promise<VisibilityFacts> {
    if (uptoSeq === undefined) return this.readVisibilityFacts(roomId, viewer, undefined);
    return this.facts.get(`${roomId}\u0000${viewer ?? ''}\u0000${uptoSeq}`, () => this.readVisibilityFacts(roomId, viewer, uptoSeq));
  }

  private async readVisibilityFacts(roomId: string, viewer: string | null, uptoSeq: number | undefined): Promise<VisibilityFacts> {
    const which =
      viewer === null
        ? sql`(type = 'm.room.history_visibility' and state_key = '')`
        : sql`((type = 'm.room.history_visibility' and state_key = '') or (type = 'm.room.member' and state_key = ${viewer}))`;
    const result = await this.db.execute(sql`
      select seq, depth, type, pdu->'content' as content from syncapi_room_events
      where room_id = ${roomId} and state_key is not null and ${which}
        ${uptoSeq === undefined ? sql`` : sql`and seq <= ${uptoSeq}`}
      order by depth, seq`);
    const facts: { visibility: VisibilityFacts['visibility'][number][]; membership: VisibilityFacts['membership'][number][] } = { visibility: [], membership: [] };
    for (const r of rowsOf<{ seq: string | number; depth: string | number; type: string; content: Record<string, unknown> | null }>(result)) {
      const place = { seq: Number(r.seq), depth: Number(r.depth) };
      if (r.type === 'm.room.history_visibility') facts.visibility.push({ ...place, value: visibilityOf(r.content) });
      else facts.membership.push({ ...place, membership: typeof r.content?.membership === 'string' ? r.content.membership : 'leave' });
    }
    return { ...facts, viewer };
  }

  /** The events of `events` (all of `roomId`) that `viewer` may see, judged at each event. */
  async visibleTo<E extends StoredEvent>(roomId: string, viewer: string | null, events: E[], uptoSeq?: number): Promise<E[]> {
    if (events.length === 0) return events;
    const judge = visibilityJudge(await this.visibilityFacts(roomId, viewer, uptoSeq));
    return events.filter(judge);
  }

  /** The room's newest event as it went on (not history fetched later), if any. */
  async newestLiveEvent(roomId: string): Promise<StoredEvent | undefined> {
    const [row] = await this.db
      .select(EVENT_COLUMNS)
      .from(syncapiRoomEvents)
      .where(and(eq(syncapiRoomEvents.roomId, roomId), live))
      .orderBy(desc(syncapiRoomEvents.seq))
      .limit(1);
    return row as StoredEvent | undefined;
  }

  /** The sequence of the room's newest event (0: none). */
  async latestSeq(roomId: string): Promise<number> {
    const [row] = await this.db.select({ seq: syncapiRoomEvents.seq }).from(syncapiRoomEvents).where(eq(syncapiRoomEvents.roomId, roomId)).orderBy(desc(syncapiRoomEvents.seq)).limit(1);
    return row?.seq ?? 0;
  }
}

/**
 * A timeline filter's type and sender lists and `contains_url` as SQL (an empty `types` or
 * `senders` keeps nothing; `->` gives SQL NULL only for a missing key, so a `url` of JSON
 * null counts as present, as hasUrl counts it).
 */
function filterCondition(f: EventFilter): SQL | undefined {
  const url = sql`(${syncapiRoomEvents.pdu} -> 'content' -> 'url')`;
  const typeLike = (patterns: string[]) => (patterns.length === 0 ? sql`false` : or(...likePatterns(patterns).map((p) => like(syncapiRoomEvents.type, p))));
  return and(
    f.types ? typeLike(f.types) : undefined,
    f.notTypes && f.notTypes.length > 0 ? not(typeLike(f.notTypes)!) : undefined,
    f.senders ? (f.senders.length === 0 ? sql`false` : inArray(syncapiRoomEvents.sender, f.senders)) : undefined,
    f.notSenders && f.notSenders.length > 0 ? notInArray(syncapiRoomEvents.sender, f.notSenders) : undefined,
    f.containsUrl === undefined ? undefined : f.containsUrl ? sql`${url} is not null` : sql`${url} is null`,
  );
}

/**
 * A state event that ends what a peek may see: the room stops being world_readable or
 * turns on encryption (the same test the room actor applies when it ends peeks).
 */
export function endsPeeking(pdu: Pdu): boolean {
  if (pdu.state_key !== '') return false;
  if (pdu.type === 'm.room.encryption') return typeof pdu.content?.algorithm === 'string';
  return pdu.type === 'm.room.history_visibility' && pdu.content?.history_visibility !== 'world_readable';
}

/** Who reads the events: the sending device gets its own `unsigned.transaction_id` back. */
export interface Viewer {
  userId: string;
  deviceId: string;
}

export function clientEvents(events: StoredEvent[], now?: number, viewer?: Viewer): ClientEvent[] {
  return events.map((e) => {
    const c = toClientEvent(e.eventId, e.pdu, now);
    if (viewer && e.txnId && e.txnDeviceId === viewer.deviceId && e.pdu.sender === viewer.userId) c.unsigned.transaction_id = e.txnId;
    return c;
  });
}
