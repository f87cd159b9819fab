// Reading a room's history: one event, pages of events (/messages) and an event with what
// surrounds it (/context). History visibility is judged at each event
// (src/syncapi/visibility.ts): what the reader may not see is left out, or answers 404 for
// a single event, exactly as if it did not exist.
import type { FastifyInstance } from 'fastify';
import { clientEvents, type StoredEvent } from '../../syncapi/roomReader';
import { toClientEvent } from '../../syncapi/clientEvents';
import { formatTopologicalToken, parsePaginationToken, positionAfter, positionOf, type PaginationToken, type TopoPosition } from '../../syncapi/syncToken';
import { mayOpenRoom, visibilityJudge, type EventRef } from '../../syncapi/visibility';
import { forbidden, invalidParam, notFound } from '../errors';
import { requireAuth, sessionOf } from './auth';
import type { ClientContext } from './context';
import { clientRoute } from './prefixes';
import { requireRoomId } from './resolveRoom';

/** The most events one /messages or /context answer holds. */
const MAX_PAGE = 1000;
/** How many pages /messages reads past hidden events before it answers with what it has. */
const MAX_HIDDEN_PAGES = 10;

/**
 * The judge of what `userId` may see in the room, or 403 when it may see nothing at all: it
 * has never been a member (nor invited) and the room is not world_readable now.
 */
async function readerOf(ctx: ClientContext, roomId: string, userId: string): Promise<(e: EventRef) => boolean> {
  if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
  const facts = await ctx.rooms.visibilityFacts(roomId, userId);
  const current = facts.visibility.at(-1)?.value ?? 'shared';
  if (!mayOpenRoom(facts, current)) throw forbidden('you are not in this room and it is not world_readable');
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

export function registerHistoryRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/event/:eventId',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const { roomId, eventId } = req.params as { roomId: string; eventId: string };
      requireRoomId(roomId);
      const visible = await readerOf(ctx, roomId, userId);
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
      const q = req.query as { from?: string; to?: string; dir?: string; limit?: string };
      const dir = q.dir ?? 'b';
      if (dir !== 'b' && dir !== 'f') throw invalidParam('dir must be b or f');
      const limit = parseLimit(q.limit, 10);
      const fromToken = q.from !== undefined ? parseToken(q.from, 'from') : undefined;
      const toToken = q.to !== undefined ? parseToken(q.to, 'to') : undefined;
      const visible = await readerOf(ctx, roomId, userId);
      const from: TopoPosition = fromToken ? await ctx.rooms.positionOf(roomId, fromToken) : dir === 'b' ? await ctx.rooms.endPosition(roomId) : { depth: 0, seq: 0 };
      const to = toToken ? await ctx.rooms.positionOf(roomId, toToken) : undefined;
      // Read pages until `limit` visible events are found, the room runs out, or enough
      // pages were all hidden; `end` continues after the last event read, shown or not.
      const chunk: StoredEvent[] = [];
      let cursor = from;
      let more = limit > 0;
      for (let pages = 0; more && chunk.length < limit && pages < MAX_HIDDEN_PAGES; pages++) {
        const want = limit - chunk.length;
        const page = await ctx.rooms.page(roomId, cursor, dir, want, to);
        for (const e of page) if (visible(e)) chunk.push(e);
        more = page.length === want;
        const last = page.at(-1);
        if (last) cursor = dir === 'b' ? positionOf(last) : positionAfter(last);
      }
      return {
        chunk: clientEvents(chunk, ctx.clock.now(), sessionOf(req)),
        start: q.from ?? formatTopologicalToken(from),
        ...(more ? { end: formatTopologicalToken(cursor) } : {}),
        state: [],
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
      const limit = parseLimit((req.query as { limit?: string }).limit, 10);
      const visible = await readerOf(ctx, roomId, userId);
      const event = await ctx.rooms.eventById(eventId);
      if (!event || event.pdu.room_id !== roomId || !visible(event)) throw notFound('no such event');
      const beforeCount = Math.floor(limit / 2);
      const afterCount = limit - beforeCount;
      const before = beforeCount > 0 ? await ctx.rooms.page(roomId, positionOf(event), 'b', beforeCount) : [];
      const after = afterCount > 0 ? await ctx.rooms.page(roomId, positionAfter(event), 'f', afterCount) : [];
      const now = ctx.clock.now();
      const viewer = sessionOf(req);
      const shownBefore = before.filter(visible);
      const shownAfter = after.filter(visible);
      return {
        event: toClientEvent(event.eventId, event.pdu, now),
        // Newest first, as /messages backwards gives them.
        events_before: clientEvents(shownBefore, now, viewer),
        events_after: clientEvents(shownAfter, now, viewer),
        // Paginating on continues past everything read, shown or not.
        start: formatTopologicalToken(positionOf(before.at(-1) ?? event)),
        end: formatTopologicalToken(positionAfter(after.at(-1) ?? event)),
        // The state at the last event returned.
        state: clientEvents(await ctx.rooms.stateBefore(roomId, (shownAfter.at(-1) ?? event).seq + 1), now),
      };
    },
  });
}
