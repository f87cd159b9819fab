// Presence (client-server API, "Presence"): PUT and GET /presence/{userId}/status. A user
// sets only their own; they see their own and that of users sharing a joined room with
// them. Guests too. A change takes the next client-data position and wakes the /sync of
// the user and of everyone sharing a room with them (src/syncapi/clientData.ts).
import type { FastifyInstance } from 'fastify';
import { isValidUserId, serverOf } from '../../events/ids.ts';
import { PRESENCE_STATES, presenceContent, type PresenceState } from '../../syncapi/clientData.ts';
import { badJson, forbidden, invalidParam, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';

/** Longest status message accepted (it goes to everyone sharing a room, at every change). */
export const MAX_STATUS_MSG_LENGTH = 1024;

/** A user's presence as GET /presence/{userId}/status and m.presence events show it (offline when never set). */
export async function presenceOf(ctx: Pick<ClientContext, 'sync' | 'clock'>, userId: string): Promise<Record<string, unknown>> {
  const row = await ctx.sync.clientData.presenceOf(userId);
  return row ? presenceContent(row, ctx.clock.now()) : { presence: 'offline' };
}

export function registerPresenceRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts, { guests: true });

  clientRoute(app, {
    method: 'PUT',
    path: '/presence/:userId/status',
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const target = (req.params as { userId: string }).userId;
      if (!isValidUserId(target)) throw invalidParam(`malformed user ID ${target}`);
      if (target !== userId) throw forbidden('you can only set your own presence');
      const body = req.body as { presence?: unknown; status_msg?: unknown };
      if (typeof body.presence !== 'string') throw badJson('presence is required: online, offline or unavailable');
      if (!PRESENCE_STATES.includes(body.presence as PresenceState)) throw invalidParam(`unknown presence ${JSON.stringify(body.presence)}: online, offline or unavailable`);
      const statusMsg = body.status_msg ?? null;
      if (statusMsg !== null && typeof statusMsg !== 'string') throw badJson('status_msg must be a string');
      if (statusMsg !== null && statusMsg.length > MAX_STATUS_MSG_LENGTH) throw invalidParam(`status_msg is longer than ${MAX_STATUS_MSG_LENGTH} characters`);
      await ctx.sync.setPresence(userId, body.presence as PresenceState, statusMsg);
      return {};
    },
  });

  // Someone else's presence: 404 for a user this server knows nothing of (no local account,
  // no membership in any room here), 403 for one who shares no joined room with the caller
  // (the spec's "not allowed to see this user's presence").
  clientRoute(app, {
    method: 'GET',
    path: '/presence/:userId/status',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const target = (req.params as { userId: string }).userId;
      if (!isValidUserId(target)) throw invalidParam(`malformed user ID ${target}`);
      if (target !== userId) {
        const known = serverOf(target) === ctx.config.serverName ? await ctx.accounts.exists(target) : (await ctx.rooms.membershipsOf(target)).length > 0;
        if (!known) throw notFound('no such user');
        if (!(await ctx.sync.clientData.shareARoom(userId, target))) throw forbidden('you are not allowed to see their presence');
      }
      return presenceOf(ctx, target);
    },
  });
}
