// What real clients ask for at start-up: capabilities, push rules, TURN, third-party protocols.
import type { FastifyInstance } from 'fastify';
import { requireAuth } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { ROOM_VERSION } from './rooms/index.ts';

export function registerMiscRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  // Guests may ask for capabilities, push rules and TURN servers (client-server API, Guest access).
  const guestsToo = requireAuth(ctx.accounts, { guests: true });
  clientRoute(app, {
    method: 'GET',
    path: '/capabilities',
    config: { barrier: false },
    preHandler: guestsToo,
    handler: async () => ({
      capabilities: {
        'm.room_versions': { default: ROOM_VERSION, available: { [ROOM_VERSION]: 'stable' } },
        'm.change_password': { enabled: false },
        'm.set_displayname': { enabled: true },
        'm.set_avatar_url': { enabled: true },
        'm.3pid_changes': { enabled: false },
      },
    }),
  });
  clientRoute(app, {
    method: 'GET',
    path: '/pushrules/',
    config: { barrier: false },
    preHandler: guestsToo,
    handler: async () => ({ global: { override: [], content: [], room: [], sender: [], underride: [] } }),
  });
  // No TURN server: `{}` (clients read a missing `uris` as none).
  clientRoute(app, { method: 'GET', path: '/voip/turnServer', config: { barrier: false }, preHandler: guestsToo, handler: async () => ({}) });
  // No bridges: no third-party protocols.
  clientRoute(app, { method: 'GET', path: '/thirdparty/protocols', config: { barrier: false }, preHandler: auth, handler: async () => ({}) });
}
