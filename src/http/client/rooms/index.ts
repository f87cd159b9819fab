// Rooms hosted here: create, send, state, read, join, leave; receipts and typing. Every write goes through the
// room's actor (command bus); every read comes from the sync projection.
import type { FastifyInstance } from 'fastify';
import type { ClientContext } from '../context.ts';
import { registerCreateRoomRoute } from './createRoom.ts';
import { registerEphemeralRoutes } from './ephemeral.ts';
import { registerRoomEventRoutes } from './events.ts';
import { registerMembershipRoutes } from './membership.ts';
import { registerModerationRoutes } from './moderation.ts';

export { ROOM_VERSION, createRoomDrafts } from './createRoom.ts';

export function registerRoomRoutes(app: FastifyInstance, ctx: ClientContext): void {
  registerCreateRoomRoute(app, ctx);
  registerRoomEventRoutes(app, ctx);
  registerMembershipRoutes(app, ctx);
  registerModerationRoutes(app, ctx);
  registerEphemeralRoutes(app, ctx);
}
