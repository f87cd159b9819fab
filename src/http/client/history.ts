// Reading a room's history: one event, pages of events (/messages) and an event with what
// surrounds it (/context). History visibility is judged at each event
// (src/syncapi/visibility.ts): what the reader may not see is left out, or answers 404 for
// a single event, exactly as if it did not exist.
import type { FastifyInstance } from 'fastify';
import { LRUCache } from 'lru-cache';
import { clientEvents, type StoredEvent } from '../../syncapi/roomReader.ts';
import { toClientEvent } from '../../syncapi/clientEvents.ts';
import { formatTopologicalToken, parsePaginationToken, positionAfter, positionOf, type PaginationToken, type TopoPosition } from '../../syncapi/syncToken.ts';
import { mayOpenRoom, visibilityJudge, type EventRef } from '../../syncapi/visibility.ts';
import { forbidden, invalidParam, notFound, type MatrixError } from '../errors.ts';
import { jsonFilterParam } from '../jsonBody.ts';
import { roomEventFilterProblem } from '../../syncapi/filterShape.ts';
import { keeps, roomEventFilterOf, type EventFilter } from '../../syncapi/syncFilter.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { requireRoomId } from './resolveRoom.ts';
import { serverOf } from '../../events/ids.ts';
import { eventsByIds } from '../../federation/authChain.ts';
import { FederationUnreachableError } from '../../federation/client.ts';
import type { RemoteHistory } from '../../federation/remoteHistory.ts';

/** The most events one /messages or /context answer holds. */
const MAX_PAGE = 1000;
/** How many pages /messages reads past hidden events before it answers with what it has. */
const MAX_HIDDEN_PAGES = 10;

/**
 * The judge of what `userId` may see in the room, or `refuse` (403 unless the caller says
 * otherwise) when it may see nothing at all: it has never been a member (nor invited) and
 * the room is not world_readable now.
 */
async function readerOf(ctx: ClientContext, roomId: string, userId: string, refuse: (why: string) => MatrixError = forbidden): Promise<(e: EventRef) => boolean> {
  if (!(await ctx.rooms.roomExists(roomId))) throw refuse('you are not in this room (or it does not exist)');
  const facts = await ctx.rooms.visibilityFacts(roomId, userId);
  const current = facts.visibility.at(-1)?.value ?? 'shared';
  if (!mayOpenRoom(facts, current)) throw refuse('you are not in this room and it is not world_readable');
  return visibilityJudge(facts);
}

function parseLimit(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const limit = Number(raw);
  if (!Number.isInteger(limit) || limit < 0) throw invalidParam('limit must be a non-negative integer');
  return Math.min(limit, MAX_PAGE);
}

function parseToken(raw: string, name: string): PaginationToken {
  const parsed = parsePaginationToken(raw);
  if (parsed === null) throw invalidParam(`unknown ${name} token`);
  return parsed;
}

/** Backfill rounds one /messages request may make. */
const MAX_BACKFILL_ROUNDS = 3;
/** Events asked for per backfill request, at least. */
const MIN_BACKFILL = 20;
/** A gap the host had nothing more for (its history there is not for us) is not asked about again for this long. */
const EXHAUSTED_GAP_MS = 10 * 60_000;
const MAX_EXHAUSTED_GAPS = 10_000;

/** Gaps the host had nothing for, each for EXHAUSTED_GAP_MS (bounded; the longest since added dropped first). */
class ExhaustedGaps {
  private readonly gaps: LRUCache<string, true>;
  constructor(now: () => number) {
    this.gaps = new LRUCache<string, true>({ max: MAX_EXHAUSTED_GAPS, ttl: EXHAUSTED_GAP_MS, ttlAutopurge: false, perf: { now }, ttlResolution: 0 });
  }
  has(eventId: string): boolean {
    return this.gaps.has(eventId);
  }
  add(eventId: string): void {
    this.gaps.set(eventId, true);
  }
}

function comparePositions(a: TopoPosition, b: TopoPosition): number {
  return a.depth - b.depth || a.seq - b.seq;
}

/**
 * The newest event at or below `from` (looking at `scan` events) whose prev_events we do
 * not all hold: where the history we have of a remote room has a gap.
 */
async function gapBelow(ctx: ClientContext, exhaustedGaps: ExhaustedGaps, roomId: string, from: TopoPosition, scan: number): Promise<StoredEvent | undefined> {
  const events = await ctx.rooms.page(roomId, { depth: from.depth, seq: from.seq + 1 }, 'b', scan);
  const prevs = [...new Set(events.flatMap((e) => e.pdu.prev_events ?? []))];
  const held = new Set((await eventsByIds(ctx.db, prevs)).map((e) => e.eventId));
  return events.find((e) => !exhaustedGaps.has(e.eventId) && (e.pdu.prev_events ?? []).some((id) => !held.has(id)));
}

/**
 * Fills gaps below `from` from the room's host, a few rounds at most. Returns how many
 * events were stored, and the gap that is left (if any) — where the page must stop.
 */
async function backfillBelow(
  ctx: ClientContext,
  history: RemoteHistory,
  exhaustedGaps: ExhaustedGaps,
  roomId: string,
  from: TopoPosition,
  limit: number,
): Promise<{ stored: number; gap?: StoredEvent }> {
  let stored = 0;
  for (let round = 0; round < MAX_BACKFILL_ROUNDS; round++) {
    const gap = await gapBelow(ctx, exhaustedGaps, roomId, from, limit + 1);
    if (!gap) return { stored };
    let got: number;
    try {
      got = await history.backfill(roomId, [gap.eventId], Math.max(limit, MIN_BACKFILL));
    } catch (err) {
      if (!(err instanceof FederationUnreachableError)) throw err;
      return { stored, gap };
    }
    if (got === 0) exhaustedGaps.add(gap.eventId);
    stored += got;
  }
  return { stored, gap: await gapBelow(ctx, exhaustedGaps, roomId, from, limit + 1) };
}

/**
 * /messages' and /context's `filter`: a room event filter as JSON (types, senders,
 * `contains_url` and `lazy_load_members` apply). `400 M_NOT_JSON` when it does not parse, `400 M_BAD_JSON` when
 * it is not a room event filter.
 */
function roomEventFilterParam(raw: string | undefined): EventFilter | undefined {
  return raw === undefined ? undefined : roomEventFilterOf(jsonFilterParam(raw, roomEventFilterProblem));
}

const kept = (filter: EventFilter | undefined) => (e: StoredEvent) => filter === undefined || keeps(filter, e.pdu.type, e.pdu.sender, e.pdu.content ?? {});

/**
 * With `lazy_load_members`, the `state` of /messages and /context: the member events of the
 * senders of the events returned, as they stood at the newest of them, so a client that
 * lazy-loads members can show who sent what.
 */
async function sendersMembers(ctx: ClientContext, roomId: string, events: StoredEvent[]): Promise<StoredEvent[]> {
  if (events.length === 0) return [];
  const senders = [...new Set(events.map((e) => e.pdu.sender))];
  const newest = Math.max(...events.map((e) => e.seq));
  return ctx.rooms.membersBefore(roomId, newest + 1, senders);
}

export function registerHistoryRoutes(app: FastifyInstance, ctx: ClientContext): void {
  // Guests read history as anyone does (client-server API, Guest access module).
  const auth = requireAuth(ctx.accounts, { guests: true });
  const exhaustedGaps = new ExhaustedGaps(() => ctx.clock.now());

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/event/:eventId',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const { roomId, eventId } = req.params as { roomId: string; eventId: string };
      requireRoomId(roomId);
      // 404 whether the event is unknown or the reader may not see it, the room as a whole
      // included (client-server API: "not found or you do not have permission").
      const visible = await readerOf(ctx, roomId, userId, () => notFound('no such event'));
      const e = await ctx.rooms.eventById(eventId);
      if (!e || e.pdu.room_id !== roomId || !visible(e)) throw notFound('no such event');
      return toClientEvent(e.eventId, e.pdu, ctx.clock.now());
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/messages',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const q = req.query as { from?: string; to?: string; dir?: string; limit?: string; filter?: string };
      const filter = roomEventFilterParam(q.filter);
      const wanted = kept(filter);
      const dir = q.dir ?? 'b';
      if (dir !== 'b' && dir !== 'f') throw invalidParam('dir must be b or f');
      const limit = parseLimit(q.limit, 10);
      const fromToken = q.from !== undefined ? parseToken(q.from, 'from') : undefined;
      const toToken = q.to !== undefined ? parseToken(q.to, 'to') : undefined;
      let visible = await readerOf(ctx, roomId, userId);
      const from: TopoPosition = fromToken ? await ctx.rooms.positionOf(roomId, fromToken) : dir === 'b' ? await ctx.rooms.endPosition(roomId) : { depth: 0, seq: 0 };
      let to = toToken ? await ctx.rooms.positionOf(roomId, toToken) : undefined;
      // A room peeked on another server: history we lack below `from` is fetched from its
      // host first. A gap that stays (host unreachable, or more gaps than one request
      // fills) bounds this page, and `end` lets the client come back for the rest.
      let gap: StoredEvent | undefined;
      if (dir === 'b' && ctx.history && serverOf(roomId) !== ctx.config.serverName && limit > 0) {
        const filled = await backfillBelow(ctx, ctx.history, exhaustedGaps, roomId, from, limit);
        gap = filled.gap;
        if (filled.stored > 0) visible = await readerOf(ctx, roomId, userId);
        if (gap && (!to || comparePositions(positionOf(gap), to) > 0)) to = positionOf(gap);
      }
      // Read pages until `limit` visible events are found, the room runs out, or enough
      // pages were all hidden; `end` continues after the last event read, shown or not.
      const chunk: StoredEvent[] = [];
      let cursor = from;
      let more = limit > 0;
      for (let pages = 0; more && chunk.length < limit && pages < MAX_HIDDEN_PAGES; pages++) {
        const want = limit - chunk.length;
        const page = await ctx.rooms.page(roomId, cursor, dir, want, to);
        // Events the filter leaves out are passed over like hidden ones.
        for (const e of page) if (visible(e) && wanted(e)) chunk.push(e);
        more = page.length === want;
        const last = page.at(-1);
        if (last) cursor = dir === 'b' ? positionOf(last) : positionAfter(last);
      }
      // Bounded by a gap: there is more, once the host answers. (The cursor is where
      // reading stopped: at the gap's event when the page reached it, above it otherwise.)
      if (gap) more = true;
      // `end` is left out only when nothing more can come: no events in this answer and
      // none left in that direction (as Synapse does). A page that reached the end still
      // carries it: going forwards, events sent later follow it; going backwards, the next
      // page is empty and ends the scroll.
      return {
        chunk: clientEvents(chunk, ctx.clock.now(), sessionOf(req)),
        start: q.from ?? formatTopologicalToken(from),
        ...(more || chunk.length > 0 ? { end: formatTopologicalToken(cursor) } : {}),
        state: filter?.lazyLoadMembers ? clientEvents(await sendersMembers(ctx, roomId, chunk), ctx.clock.now()) : [],
      };
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/context/:eventId',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const { roomId, eventId } = req.params as { roomId: string; eventId: string };
      requireRoomId(roomId);
      const q = req.query as { limit?: string; filter?: string };
      const limit = parseLimit(q.limit, 10);
      const filter = roomEventFilterParam(q.filter);
      const wanted = kept(filter);
      const visible = await readerOf(ctx, roomId, userId);
      const event = await ctx.rooms.eventById(eventId);
      if (!event || event.pdu.room_id !== roomId || !visible(event)) throw notFound('no such event');
      const beforeCount = Math.floor(limit / 2);
      const afterCount = limit - beforeCount;
      const before = beforeCount > 0 ? await ctx.rooms.page(roomId, positionOf(event), 'b', beforeCount) : [];
      const after = afterCount > 0 ? await ctx.rooms.page(roomId, positionAfter(event), 'f', afterCount) : [];
      const now = ctx.clock.now();
      const viewer = sessionOf(req);
      // The filter applies to the events around the event, and to the state; never to the event itself.
      const shownBefore = before.filter((e) => visible(e) && wanted(e));
      const shownAfter = after.filter((e) => visible(e) && wanted(e));
      const last = (shownAfter.at(-1) ?? event).seq;
      const state = filter?.lazyLoadMembers ? await sendersMembers(ctx, roomId, [...shownBefore, event, ...shownAfter]) : (await ctx.rooms.stateBefore(roomId, last + 1)).filter(wanted);
      return {
        event: toClientEvent(event.eventId, event.pdu, now),
        // Newest first, as /messages backwards gives them.
        events_before: clientEvents(shownBefore, now, viewer),
        events_after: clientEvents(shownAfter, now, viewer),
        // Paginating on continues past everything read, shown or not.
        start: formatTopologicalToken(positionOf(before.at(-1) ?? event)),
        end: formatTopologicalToken(positionAfter(after.at(-1) ?? event)),
        // The state at the last event returned (with lazy_load_members, its senders' members).
        state: clientEvents(state, now),
      };
    },
  });
}
