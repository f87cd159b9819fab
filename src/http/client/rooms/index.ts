// Rooms hosted here: create, send, state, read, join, leave. Every write goes through the
// room's actor (command bus); every read comes from the sync projection.
import type { FastifyInstance } from 'fastify';
import type { ClientContext } from '../context';
import { registerCreateRoomRoute } from './createRoom';
import { registerRoomEventRoutes } from './events';
import { registerMembershipRoutes } from './membership';

export { ROOM_VERSION, createRoomDrafts } from './createRoom';

export function registerRoomRoutes(app: FastifyInstance, ctx: ClientContext): void {
  registerCreateRoomRoute(app, ctx);
  registerRoomEventRoutes(app, ctx);
  registerMembershipRoutes(app, ctx);
}
