// Ban, unban and kick: m.room.member events about another user (ban, leave), which the
// room's authorization rules allow by power level (src/actors/authRules.ts).
import type { FastifyInstance } from 'fastify';
import { isValidUserId } from '../../../events/ids.ts';
import { MatrixError, forbidden, invalidParam } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId } from '../resolveRoom.ts';
import { currentStateEvent, requireLocalRoom } from './access.ts';

type Action = 'ban' | 'unban' | 'kick';

const body = { type: 'object', properties: { user_id: { type: 'string' }, reason: { type: 'string' } } };

export function registerModerationRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  const moderate = (action: Action) =>
    clientRoute(app, {
      method: 'POST',
      path: `/rooms/:roomId/${action}`,
      config: { barrier: false },
      schema: { body },
      preHandler: auth,
      handler: async (req) => {
        const session = sessionOf(req);
        const roomId = requireRoomId((req.params as { roomId: string }).roomId);
        const { user_id: target, reason } = req.body as { user_id?: string; reason?: string };
        if (target === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'user_id is required');
        if (!isValidUserId(target)) throw invalidParam('user_id must be a user ID');
        requireLocalRoom(ctx, roomId);
        // The auth rules allow a leave event for any user; the endpoints are narrower
        // (client-server API: kick only someone in the room, unban only someone banned).
        // An unknown room is left to the room actor (404).
        if (action !== 'ban' && (await ctx.rooms.roomExists(roomId))) {
          await ctx.barrier.forReads();
          // (Only members learn who else is in the room.)
          if ((await currentStateEvent(ctx, roomId, 'm.room.member', session.userId))?.content.membership !== 'join') throw forbidden('you are not in this room');
          const membership = (await currentStateEvent(ctx, roomId, 'm.room.member', target))?.content.membership ?? 'leave';
          if (action === 'unban' && membership !== 'ban') throw forbidden(`${target} is not banned from this room`);
          if (action === 'kick' && !['join', 'invite', 'knock'].includes(String(membership))) throw forbidden(`${target} is not in this room`);
        }
        await clientWrite(ctx, req, session, {
          type: 'SendEvents',
          roomId,
          events: [{ type: 'm.room.member', sender: session.userId, state_key: target, content: { membership: action === 'ban' ? 'ban' : 'leave', ...(reason !== undefined ? { reason } : {}) } }],
        });
        return {};
      },
    });

  moderate('ban');
  moderate('unban');
  moderate('kick');
}
