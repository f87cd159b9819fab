// Membership: join, leave, invite, who is in a room (and which rooms a user is in), and a
// profile change carried into the member events of the rooms a user is in.
import { and, eq } from 'drizzle-orm';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DomainError } from '../../../actors/errors.ts';
import type { Session } from '../../../clientapi/accounts.ts';
import { readProfile, type Profile } from '../../../clientapi/profiles.ts';
import { isValidUserId, serverOf } from '../../../events/ids.ts';
import { syncapiCurrentState } from '../../../store/schema.ts';
import { clientEvents } from '../../../syncapi/roomReader.ts';
import { parsePaginationToken } from '../../../syncapi/syncToken.ts';
import { MatrixError, badJson, invalidParam } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId, resolveRoomIdOrAlias } from '../resolveRoom.ts';
import { currentStateEvent, requireGuestMayJoin, requireLocalRoom, requireReadable, sendState, stateIn, stateViewOf } from './access.ts';

const MEMBERSHIPS = new Set(['join', 'invite', 'knock', 'leave', 'ban']);

/** A join or leave body: an optional reason; a join's other keys go into the member event. */
const membershipBody = { type: 'object', properties: { reason: { type: 'string' } } };

/** Keys of a /join body that are not member event content (a request parameter, and the membership the route sets). */
const JOIN_PARAMETERS = ['third_party_signed', 'membership'];

export function registerMembershipRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  const guestsToo = requireAuth(ctx.accounts, { guests: true });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/joined_members',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await requireReadable(ctx, roomId, userId);
      const rows = await ctx.db
        .select({ userId: syncapiCurrentState.stateKey, content: syncapiCurrentState.content })
        .from(syncapiCurrentState)
        .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.member'), eq(syncapiCurrentState.membership, 'join')));
      // Both keys always there, null when the member event has none (as Synapse answers,
      // and as clients and sytest read it).
      const joined: Record<string, { display_name: string | null; avatar_url: string | null }> = {};
      for (const { userId: member, content } of rows) {
        const c = content as Record<string, unknown>;
        joined[member] = {
          display_name: typeof c.displayname === 'string' ? c.displayname : null,
          avatar_url: typeof c.avatar_url === 'string' ? c.avatar_url : null,
        };
      }
      return { joined };
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/members',
    preHandler: guestsToo,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const q = req.query as { at?: string; membership?: string; not_membership?: string };
      for (const name of ['membership', 'not_membership'] as const) {
        const value = q[name];
        if (value !== undefined && !MEMBERSHIPS.has(value)) throw invalidParam(`${name} must be one of ${[...MEMBERSHIPS].join(', ')}`);
      }
      const at = q.at !== undefined ? parsePaginationToken(q.at) : undefined;
      if (at === null) throw invalidParam('unknown at token');
      const view = await stateViewOf(ctx, roomId, userId);
      // `at`: the members as they were at that point (a sync or pagination token); for a
      // user who left, never later than their leave.
      const state = await stateIn(ctx, roomId, view, at ? ('stream' in at ? at.stream : at.topo.seq) : undefined);
      const members = state.filter((e) => {
        if (e.pdu.type !== 'm.room.member') return false;
        const m = e.pdu.content.membership;
        return (q.membership === undefined || m === q.membership) && (q.not_membership === undefined || m !== q.not_membership);
      });
      return { chunk: clientEvents(members, ctx.clock.now()) };
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

  /**
   * A join's member event: the user's profile, then what the client put in the body (a
   * reason, a per-room display name, custom keys), membership last.
   */
  const join = async (req: FastifyRequest, roomId: string) => {
    requireLocalRoom(ctx, roomId);
    const session = sessionOf(req);
    if (session.isGuest) await requireGuestMayJoin(ctx, roomId);
    const body = { ...((req.body as Record<string, unknown> | undefined) ?? {}) };
    for (const key of JOIN_PARAMETERS) delete body[key];
    const profile = (await readProfile(ctx.db, session.userId)) ?? {};
    const content = { ...profile, ...body, membership: 'join' };
    await sendState(ctx, req, session, roomId, { type: 'm.room.member', sender: session.userId, state_key: session.userId, content });
  };

  const leave = async (req: FastifyRequest, roomId: string) => {
    requireLocalRoom(ctx, roomId);
    const session = sessionOf(req);
    const { reason } = (req.body as { reason?: string } | undefined) ?? {};
    await clientWrite(ctx, req, session, {
      type: 'SendEvents',
      roomId,
      events: [{ type: 'm.room.member', sender: session.userId, state_key: session.userId, content: { membership: 'leave', ...(reason !== undefined ? { reason } : {}) } }],
    });
  };

  clientRoute(app, {
    method: 'POST',
    path: '/join/:roomIdOrAlias',
    config: { barrier: false },
    schema: { body: membershipBody },
    preHandler: guestsToo,
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
    schema: { body: membershipBody },
    preHandler: guestsToo,
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
    schema: { body: membershipBody },
    preHandler: guestsToo,
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
    schema: { body: { type: 'object', required: ['user_id'], properties: { user_id: { type: 'string' }, reason: { type: 'string' } } } },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const { user_id: target, reason } = req.body as { user_id: string; reason?: string };
      if (!isValidUserId(target)) throw badJson('user_id must be a user ID');
      requireLocalRoom(ctx, roomId);
      await clientWrite(ctx, req, sessionOf(req), {
        type: 'SendEvents',
        roomId,
        events: [{ type: 'm.room.member', sender: userId, state_key: target, content: { membership: 'invite', ...(reason !== undefined ? { reason } : {}) } }],
      });
      return {};
    },
  });
}

/** How many rooms a profile change updates at once. */
const PROFILE_UPDATE_CONCURRENCY = 4;

/**
 * After a profile change: a new join event carrying `profile` (the member event's other
 * keys kept) in every room hosted here that the user is joined to, sent as a join is. A
 * room that refuses (the user was banned meanwhile, say) is skipped; the profile stands.
 */
export async function reflectProfileInRooms(ctx: ClientContext, req: FastifyRequest, session: Session, profile: Profile): Promise<void> {
  const { userId } = session;
  await ctx.barrier.forReads();
  const rooms = (await ctx.rooms.membershipsOf(userId)).filter((m) => m.membership === 'join' && serverOf(m.roomId) === ctx.config.serverName).map((m) => m.roomId);
  const update = async (roomId: string) => {
    const current = await currentStateEvent(ctx, roomId, 'm.room.member', userId);
    if (current?.content.membership !== 'join') return;
    const { displayname: _name, avatar_url: _avatar, ...rest } = current.content;
    try {
      await sendState(ctx, req, session, roomId, { type: 'm.room.member', sender: userId, state_key: userId, content: { ...rest, ...profile, membership: 'join' } });
    } catch (err) {
      if (!(err instanceof DomainError) && !(err instanceof MatrixError)) throw err;
      req.log.info({ roomId, err: err.message }, 'profile change not carried into a room');
    }
  };
  for (let i = 0; i < rooms.length; i += PROFILE_UPDATE_CONCURRENCY) await Promise.all(rooms.slice(i, i + PROFILE_UPDATE_CONCURRENCY).map(update));
}
