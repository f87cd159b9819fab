// A room's events and state: send, put and get state. Writes go to the room's actor
// (rooms hosted here only); reads come from the sync projection (for a user who left, the
// state when they left: access.ts, stateViewOf).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { toClientEvent } from '../../../syncapi/clientEvents.ts';
import { clientEvents } from '../../../syncapi/roomReader.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import { invalidParam, notFound } from '../../errors.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId } from '../resolveRoom.ts';
import { currentStateEvent, lastEventId, requireGuestMemberEvent, requireLocalRoom, sendState, stateIn, stateViewOf } from './access.ts';

export function registerRoomEventRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const guestsToo = requireAuth(ctx.accounts, { guests: true });

  const send = async (req: FastifyRequest, txnId: string | undefined) => {
    const session = sessionOf(req);
    const { userId, deviceId } = session;
    const { roomId, eventType } = req.params as { roomId: string; eventType: string };
    requireRoomId(roomId);
    requireLocalRoom(ctx, roomId);
    const result = await clientWrite(ctx, req, session, {
      type: 'SendEvents',
      roomId,
      events: [{ type: eventType, sender: userId, content: req.body as Record<string, unknown> }],
      ...(txnId !== undefined ? { txn: { deviceId, txnId } } : {}),
    });
    return { event_id: lastEventId(result) };
  };

  clientRoute(app, {
    method: 'PUT',
    path: '/rooms/:roomId/send/:eventType/:txnId',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: guestsToo,
    handler: (req) => send(req, (req.params as { txnId: string }).txnId),
  });

  // A POST without a transaction ID (from r0; Synapse serves it under v3 too, and
  // Complement's TestSendAndFetchMessage uses it there): no idempotency, as in Synapse — the
  // event is sent as a new one every time.
  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/send/:eventType',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: guestsToo,
    handler: (req) => send(req, undefined),
  });

  // Setting state to what it already is (same sender, same content) writes nothing and
  // answers the current event's ID. Guests may set state too (since v1.2 of the spec),
  // as far as the room's power levels let them.
  const putState = async (req: FastifyRequest) => {
    const session = sessionOf(req);
    const { roomId, eventType, stateKey } = req.params as { roomId: string; eventType: string; stateKey?: string };
    requireRoomId(roomId);
    requireLocalRoom(ctx, roomId);
    const draft = { type: eventType, sender: session.userId, state_key: stateKey ?? '', content: req.body as Record<string, unknown> };
    if (session.isGuest && eventType === 'm.room.member') await requireGuestMemberEvent(ctx, session, roomId, draft.state_key, draft.content);
    const eventId = await sendState(ctx, req, session, roomId, draft);
    if (eventType === 'm.room.guest_access' && (stateKey ?? '') === '' && draft.content.guest_access !== 'can_join') await removeGuests(ctx, req, roomId);
    return { event_id: eventId };
  };
  clientRoute(app, { method: 'PUT', path: '/rooms/:roomId/state/:eventType', config: { barrier: false }, schema: { body: { type: 'object' } }, preHandler: guestsToo, handler: putState });
  clientRoute(app, { method: 'PUT', path: '/rooms/:roomId/state/:eventType/:stateKey', config: { barrier: false }, schema: { body: { type: 'object' } }, preHandler: guestsToo, handler: putState });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/state',
    preHandler: guestsToo,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      return clientEvents(await stateIn(ctx, roomId, await stateViewOf(ctx, roomId, userId)), ctx.clock.now());
    },
  });

  // `?format=event` answers the whole event, `content` (the default) its content only.
  const getState = async (req: FastifyRequest) => {
    const { userId } = sessionOf(req);
    const { roomId, eventType, stateKey } = req.params as { roomId: string; eventType: string; stateKey?: string };
    const { format = 'content' } = req.query as { format?: string };
    if (format !== 'content' && format !== 'event') throw invalidParam('format must be content or event');
    requireRoomId(roomId);
    const view = await stateViewOf(ctx, roomId, userId);
    if (view.kind === 'departed') {
      const event = (await stateIn(ctx, roomId, view)).find((e) => e.pdu.type === eventType && e.pdu.state_key === (stateKey ?? ''));
      if (!event) throw notFound('no such state event');
      return format === 'content' ? event.pdu.content : toClientEvent(event.eventId, event.pdu, ctx.clock.now());
    }
    if (format === 'content') {
      const content = await ctx.rooms.stateContent(roomId, eventType, stateKey ?? '');
      if (!content) throw notFound('no such state event');
      return content;
    }
    const current = await currentStateEvent(ctx, roomId, eventType, stateKey ?? '');
    const event = current && (await ctx.rooms.eventById(current.eventId));
    if (!event) throw notFound('no such state event');
    return toClientEvent(event.eventId, event.pdu, ctx.clock.now());
  };
  clientRoute(app, { method: 'GET', path: '/rooms/:roomId/state/:eventType', preHandler: guestsToo, handler: getState });
  clientRoute(app, { method: 'GET', path: '/rooms/:roomId/state/:eventType/:stateKey', preHandler: guestsToo, handler: getState });
}

/**
 * The Guest access module: when a room's m.room.guest_access stops being can_join, the server
 * "MUST set those users' m.room.member state to leave" — each guest account of this server
 * joined to the room leaves it (its own leave event, as Synapse sends).
 */
async function removeGuests(ctx: ClientContext, req: { id: string }, roomId: string): Promise<void> {
  await ctx.barrier.forReads();
  const joined = (await ctx.rooms.currentState(roomId))
    .filter((e) => e.pdu.type === 'm.room.member' && e.pdu.content?.membership === 'join' && typeof e.pdu.state_key === 'string')
    .map((e) => e.pdu.state_key as string);
  for (const userId of await ctx.accounts.guestsAmong(joined)) {
    await sendState(ctx, req, { userId, deviceId: '', isGuest: true }, roomId, { type: 'm.room.member', sender: userId, state_key: userId, content: { membership: 'leave' } });
  }
}
