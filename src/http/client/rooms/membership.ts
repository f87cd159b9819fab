// Membership: join, leave, invite, and who is in a room (and which rooms a user is in).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isValidUserId } from '../../../events/ids.ts';
import { clientEvents } from '../../../syncapi/roomReader.ts';
import { badJson } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId, resolveRoomIdOrAlias } from '../resolveRoom.ts';
import { requireLocalRoom, requireReadable } from './access.ts';

export function registerMembershipRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/joined_members',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await requireReadable(ctx, roomId, userId);
      const joined: Record<string, object> = {};
      for (const u of await ctx.rooms.joinedMembers(roomId)) joined[u] = {};
      return { joined };
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/members',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await requireReadable(ctx, roomId, userId);
      const state = await ctx.rooms.currentState(roomId);
      return { chunk: clientEvents(state.filter((e) => e.pdu.type === 'm.room.member'), ctx.clock.now()) };
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/joined_rooms',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const m = await ctx.rooms.membershipsOf(userId);
      return { joined_rooms: m.filter((x) => x.membership === 'join').map((x) => x.roomId) };
    },
  });

  const membership = (membershipOf: 'join' | 'leave') => async (req: FastifyRequest, roomId: string) => {
    requireLocalRoom(ctx, roomId);
    const session = sessionOf(req);
    const { userId } = session;
    await clientWrite(ctx, req, session, {
      type: 'SendEvents',
      roomId,
      events: [{ type: 'm.room.member', sender: userId, state_key: userId, content: { membership: membershipOf } }],
    });
  };
  const join = membership('join');
  const leave = membership('leave');

  clientRoute(app, {
    method: 'POST',
    path: '/join/:roomIdOrAlias',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const { roomId } = await resolveRoomIdOrAlias(ctx, (req.params as { roomIdOrAlias: string }).roomIdOrAlias);
      await join(req, roomId);
      return { room_id: roomId };
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/join',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await join(req, roomId);
      return { room_id: roomId };
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/leave',
    config: { barrier: false },
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await leave(req, roomId);
      return {};
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/invite',
    config: { barrier: false },
    schema: { body: { type: 'object', required: ['user_id'], properties: { user_id: { type: 'string' } } } },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const target = (req.body as { user_id: string }).user_id;
      if (!isValidUserId(target)) throw badJson('user_id must be a user ID');
      requireLocalRoom(ctx, roomId);
      await clientWrite(ctx, req, sessionOf(req), {
        type: 'SendEvents',
        roomId,
        events: [{ type: 'm.room.member', sender: userId, state_key: target, content: { membership: 'invite' } }],
      });
      return {};
    },
  });
}
