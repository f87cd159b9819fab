// What real clients ask for at start-up: capabilities, push rules, account data, TURN.
import type { FastifyInstance } from 'fastify';
import { invalidParam, notFound } from '../errors.ts';
import { isValidUserId } from '../../events/ids.ts';
import { requireAuth } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { ROOM_VERSION } from './rooms/index.ts';

export function registerMiscRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  clientRoute(app, {
    method: 'GET',
    path: '/capabilities',
    config: { barrier: false },
    preHandler: auth,
    handler: async () => ({
      capabilities: {
        'm.room_versions': { default: ROOM_VERSION, available: { [ROOM_VERSION]: 'stable' } },
        'm.change_password': { enabled: false },
        'm.set_displayname': { enabled: false },
        'm.set_avatar_url': { enabled: false },
        'm.3pid_changes': { enabled: false },
      },
    }),
  });
  clientRoute(app, {
    method: 'GET',
    path: '/pushrules/',
    config: { barrier: false },
    preHandler: auth,
    handler: async () => ({ global: { override: [], content: [], room: [], sender: [], underride: [] } }),
  });
  clientRoute(app, {
    method: 'GET',
    path: '/user/:userId/account_data/:type',
    preHandler: auth,
    handler: async (req) => {
      if (!isValidUserId((req.params as { userId: string }).userId)) throw invalidParam('malformed user ID');
      throw notFound('no account data of that type');
    },
  });
  clientRoute(app, { method: 'GET', path: '/voip/turnServer', config: { barrier: false }, preHandler: auth, handler: async () => ({}) });
}
