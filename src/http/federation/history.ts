// History for servers that are not in the room (MSC2444): /state, /state_ids, /event,
// /backfill, /get_missing_events and /event_auth on rooms hosted here. Signed and checked
// like every federation request. A remote server is never a member of a room hosted
// here (peekd has no federated joins), so it reads as a stranger does: the events the
// room showed to the world when they were sent (history visibility world_readable at the
// event, src/syncapi/visibility.ts), nothing else.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isValidEventId, isValidRoomId, serverOf } from '../../events/ids.ts';
import type { FederationContext } from '../../federation/context.ts';
import { authChain } from '../../federation/authChain.ts';
import { serverAclAllows } from '../../actors/serverAcl.ts';
import { RoomReader, type StoredEvent } from '../../syncapi/roomReader.ts';
import { positionAfter, positionOf } from '../../syncapi/syncToken.ts';
import { visibilityJudge, type EventRef } from '../../syncapi/visibility.ts';
import { MatrixError, badJson, forbidden, invalidParam, notFound } from '../errors.ts';
import { originOf, requireServerAuth } from './auth.ts';

/** The most PDUs one /backfill or /get_missing_events answer carries. */
export const MAX_HISTORY_LIMIT = 100;
/** Pages /backfill reads past events a stranger may not see before it answers. */
const MAX_HIDDEN_PAGES = 10;

function missingParam(name: string): MatrixError {
  return new MatrixError(400, 'M_MISSING_PARAM', `${name} is required`);
}

function roomIdParam(req: FastifyRequest): string {
  const { roomId } = req.params as { roomId: string };
  if (!isValidRoomId(roomId)) throw invalidParam(`malformed room ID ${roomId}`);
  return roomId;
}

function eventIdParam(raw: unknown, name = 'event_id'): string {
  if (raw === undefined) throw missingParam(name);
  if (typeof raw !== 'string' || !isValidEventId(raw)) throw invalidParam(`${name} must be one event ID`);
  return raw;
}

function limitParam(raw: unknown, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d{1,9}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 0) throw invalidParam('limit must be a non-negative integer');
  return Math.min(n, MAX_HISTORY_LIMIT);
}

export function registerFederationHistoryRoutes(app: FastifyInstance, ctx: FederationContext): void {
  const auth = requireServerAuth(ctx);
  const rooms = new RoomReader(ctx.db);
  const envelope = (pdus: unknown[]) => ({ origin: ctx.config.serverName, origin_server_ts: ctx.clock.now(), pdus });

  /**
   * What `origin` may read of `roomId`: 404 for a room not hosted here, 403 when the room's
   * server ACL shuts it out or the room is not world_readable now; else the per-event judge.
   */
  async function strangerView(roomId: string, origin: string): Promise<(e: EventRef) => boolean> {
    if (serverOf(roomId) !== ctx.config.serverName || !(await rooms.roomExists(roomId))) throw notFound(`unknown room ${roomId}`);
    if (!serverAclAllows((await rooms.stateContent(roomId, 'm.room.server_acl')) ?? undefined, origin)) {
      throw forbidden(`the room's server ACL does not allow ${origin}`);
    }
    const facts = await rooms.visibilityFacts(roomId, null);
    if ((facts.visibility.at(-1)?.value ?? 'shared') !== 'world_readable') throw forbidden(`${roomId} is not world_readable and ${origin} is not in it`);
    return visibilityJudge(facts);
  }

  /** An event of the room that `origin` may see: 404 when unknown (or of another room), 403 when hidden. */
  async function visibleEvent(roomId: string, eventId: string, visible: (e: EventRef) => boolean): Promise<StoredEvent> {
    const e = await rooms.eventById(eventId);
    if (!e || e.pdu.room_id !== roomId) throw notFound(`unknown event ${eventId}`);
    if (!visible(e)) throw forbidden(`${eventId} was not world_readable when it was sent`);
    return e;
  }

  /** The state before the event (as Synapse answers), and its auth chain. */
  async function stateAt(roomId: string, event: StoredEvent) {
    const state = await rooms.stateBefore(roomId, event.seq);
    const chain = await authChain(ctx.db, state);
    return { state, chain };
  }

  app.get('/_matrix/federation/v1/state_ids/:roomId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const roomId = roomIdParam(req);
    const eventId = eventIdParam((req.query as { event_id?: unknown }).event_id);
    const visible = await strangerView(roomId, originOf(req));
    const { state, chain } = await stateAt(roomId, await visibleEvent(roomId, eventId, visible));
    return { pdu_ids: state.map((e) => e.eventId), auth_chain_ids: chain.map((e) => e.eventId) };
  });

  app.get('/_matrix/federation/v1/state/:roomId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const roomId = roomIdParam(req);
    const eventId = eventIdParam((req.query as { event_id?: unknown }).event_id);
    const visible = await strangerView(roomId, originOf(req));
    const { state, chain } = await stateAt(roomId, await visibleEvent(roomId, eventId, visible));
    return { pdus: state.map((e) => e.pdu), auth_chain: chain.map((e) => e.pdu) };
  });

  app.get('/_matrix/federation/v1/event/:eventId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const eventId = eventIdParam((req.params as { eventId: string }).eventId, 'eventId');
    const e = await rooms.eventById(eventId);
    if (!e) throw notFound(`unknown event ${eventId}`);
    const visible = await strangerView(e.pdu.room_id, originOf(req));
    await visibleEvent(e.pdu.room_id, eventId, visible);
    return envelope([e.pdu]);
  });

  app.get('/_matrix/federation/v1/event_auth/:roomId/:eventId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const roomId = roomIdParam(req);
    const eventId = eventIdParam((req.params as { eventId: string }).eventId, 'eventId');
    const visible = await strangerView(roomId, originOf(req));
    const e = await visibleEvent(roomId, eventId, visible);
    return { auth_chain: (await authChain(ctx.db, [e])).map((a) => a.pdu) };
  });

  app.get('/_matrix/federation/v1/backfill/:roomId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const roomId = roomIdParam(req);
    const q = req.query as { v?: unknown; limit?: unknown };
    if (q.v === undefined) throw missingParam('v');
    const from = (Array.isArray(q.v) ? q.v : [q.v]).map((v) => eventIdParam(v, 'v'));
    const limit = limitParam(q.limit, 10);
    const visible = await strangerView(roomId, originOf(req));
    // From the newest of the `v` events back, the events themselves included, newest first.
    const starts: StoredEvent[] = [];
    for (const id of from) {
      const e = await rooms.eventById(id);
      if (e && e.pdu.room_id === roomId) starts.push(e);
    }
    if (starts.length === 0) throw notFound('none of the v events is known in this room');
    const newest = starts.reduce((a, b) => (a.pdu.depth > b.pdu.depth || (a.pdu.depth === b.pdu.depth && a.seq > b.seq) ? a : b));
    const pdus: unknown[] = [];
    let cursor = positionAfter(newest);
    for (let pages = 0; pdus.length < limit && pages < MAX_HIDDEN_PAGES; pages++) {
      const want = limit - pdus.length;
      const page = await rooms.page(roomId, cursor, 'b', want);
      for (const e of page) if (visible(e)) pdus.push(e.pdu);
      if (page.length < want) break;
      cursor = positionOf(page.at(-1)!);
    }
    return envelope(pdus);
  });

  app.post(
    '/_matrix/federation/v1/get_missing_events/:roomId',
    {
      preValidation: auth,
      config: { barrier: true },
      schema: {
        body: {
          type: 'object',
          required: ['earliest_events', 'latest_events'],
          properties: {
            earliest_events: { type: 'array', maxItems: 100, items: { type: 'string' } },
            latest_events: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string' } },
            limit: { type: 'integer', minimum: 0 },
            min_depth: { type: 'integer', minimum: 0 },
          },
        },
      },
    },
    async (req) => {
      const roomId = roomIdParam(req);
      const body = req.body as { earliest_events: string[]; latest_events: string[]; limit?: number; min_depth?: number };
      for (const id of [...body.earliest_events, ...body.latest_events]) if (!isValidEventId(id)) throw badJson(`malformed event ID ${id.slice(0, 80)}`);
      const limit = limitParam(body.limit, 10);
      const visible = await strangerView(roomId, originOf(req));
      const latest = (await Promise.all(body.latest_events.map((id) => rooms.eventById(id)))).filter((e): e is StoredEvent => !!e && e.pdu.room_id === roomId);
      if (latest.length === 0) throw notFound('none of latest_events is known in this room');
      const earliest = (await Promise.all(body.earliest_events.map((id) => rooms.eventById(id)))).filter((e): e is StoredEvent => !!e && e.pdu.room_id === roomId);
      // Rooms hosted here are one chain: the missing events are those between the newest
      // of earliest_events (exclusive) and the newest of latest_events (exclusive), the
      // newest `limit` of them, oldest first.
      const top = latest.reduce((a, b) => (a.seq > b.seq ? a : b));
      const bottom = earliest.length > 0 ? earliest.reduce((a, b) => (a.seq > b.seq ? a : b)) : undefined;
      const page = await rooms.page(roomId, positionOf(top), 'b', limit, bottom ? positionAfter(bottom) : undefined);
      const minDepth = body.min_depth ?? 0;
      const events = page.filter((e) => e.pdu.depth >= minDepth && visible(e)).reverse();
      return { events: events.map((e) => e.pdu) };
    },
  );
}
