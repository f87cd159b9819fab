// A room's events and state: send, put and get state. Writes go to the room's actor
// (rooms hosted here only); reads come from the sync projection.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { clientEvents } from '../../../syncapi/roomReader.ts';
import { notFound } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId } from '../resolveRoom.ts';
import { lastEventId, requireLocalRoom, requireReadable } from './access.ts';

export function registerRoomEventRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  clientRoute(app, {
    method: 'PUT',
    path: '/rooms/:roomId/send/:eventType/:txnId',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const { userId, deviceId } = sessionOf(req);
      const { roomId, eventType, txnId } = req.params as { roomId: string; eventType: string; txnId: string };
      requireRoomId(roomId);
      requireLocalRoom(ctx, roomId);
      const result = await clientWrite(ctx, req, { userId, deviceId }, {
        type: 'SendEvents',
        roomId,
        events: [{ type: eventType, sender: userId, content: req.body as Record<string, unknown> }],
        txn: { deviceId, txnId },
      });
      return { event_id: lastEventId(result) };
    },
  });

  const putState = async (req: FastifyRequest) => {
    const { userId } = sessionOf(req);
    const { roomId, eventType, stateKey } = req.params as { roomId: string; eventType: string; stateKey?: string };
    requireRoomId(roomId);
    requireLocalRoom(ctx, roomId);
    const result = await clientWrite(ctx, req, sessionOf(req), {
      type: 'SendEvents',
      roomId,
      events: [{ type: eventType, sender: userId, state_key: stateKey ?? '', content: req.body as Record<string, unknown> }],
    });
    return { event_id: lastEventId(result) };
  };
  clientRoute(app, { method: 'PUT', path: '/rooms/:roomId/state/:eventType', config: { barrier: false }, schema: { body: { type: 'object' } }, preHandler: auth, handler: putState });
  clientRoute(app, { method: 'PUT', path: '/rooms/:roomId/state/:eventType/:stateKey', config: { barrier: false }, schema: { body: { type: 'object' } }, preHandler: auth, handler: putState });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/state',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await requireReadable(ctx, roomId, userId);
      return clientEvents(await ctx.rooms.currentState(roomId), ctx.clock.now());
    },
  });

  const getState = async (req: FastifyRequest) => {
    const { userId } = sessionOf(req);
    const { roomId, eventType, stateKey } = req.params as { roomId: string; eventType: string; stateKey?: string };
    requireRoomId(roomId);
    await requireReadable(ctx, roomId, userId);
    const content = await ctx.rooms.stateContent(roomId, eventType, stateKey ?? '');
    if (!content) throw notFound('no such state event');
    return content;
  };
  clientRoute(app, { method: 'GET', path: '/rooms/:roomId/state/:eventType', preHandler: auth, handler: getState });
  clientRoute(app, { method: 'GET', path: '/rooms/:roomId/state/:eventType/:stateKey', preHandler: auth, handler: getState });
}
