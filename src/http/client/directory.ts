// Room aliases: GET /directory/room/{alias} (local, or the alias server's answer), PUT,
// DELETE, and a room's local aliases (GET /rooms/{roomId}/aliases).
import { and, asc, eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { isValidRoomAlias, isValidRoomId, serverOf } from '../../events/ids.ts';
import { roomAliases } from '../../store/schema.ts';
import { MatrixError, badJson, invalidParam, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { requireRoomId, resolveRoomIdOrAlias } from './resolveRoom.ts';
import { requireReadable } from './rooms/access.ts';

export function registerDirectoryRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  const aliasParam = (raw: string) => {
    if (!isValidRoomAlias(raw)) throw invalidParam(`malformed room alias ${raw}`);
    return raw;
  };

  clientRoute(app, {
    method: 'GET',
    path: '/directory/room/:alias',
    handler: async (req) => {
      const alias = aliasParam((req.params as { alias: string }).alias);
      const { roomId, servers } = await resolveRoomIdOrAlias(ctx, alias);
      return { room_id: roomId, servers };
    },
  });

  clientRoute(app, {
    method: 'PUT',
    path: '/directory/room/:alias',
    schema: { body: { type: 'object', required: ['room_id'], properties: { room_id: { type: 'string' } } } },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const alias = aliasParam((req.params as { alias: string }).alias);
      const roomId = (req.body as { room_id: string }).room_id;
      if (!isValidRoomId(roomId)) throw badJson('room_id must be a room ID');
      if (serverOf(alias) !== ctx.config.serverName) throw invalidParam('aliases can only be created on their own server');
      if (!(await ctx.rooms.roomExists(roomId))) throw notFound('unknown room');
      const inserted = await ctx.db.insert(roomAliases).values({ alias, roomId, creator: userId }).onConflictDoNothing().returning();
      if (inserted.length === 0) throw new MatrixError(409, 'M_UNKNOWN', 'that room alias exists already');
      return {};
    },
  });

  clientRoute(app, {
    method: 'DELETE',
    path: '/directory/room/:alias',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const alias = aliasParam((req.params as { alias: string }).alias);
      const deleted = await ctx.db
        .delete(roomAliases)
        .where(and(eq(roomAliases.alias, alias), eq(roomAliases.creator, userId)))
        .returning();
      if (deleted.length === 0) throw notFound('no such alias of yours');
      return {};
    },
  });

  // The aliases this server holds for the room: for its members, or anyone when its history
  // is world_readable; others (and a room this server does not know) 403.
  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/aliases',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      await requireReadable(ctx, roomId, userId);
      const rows = await ctx.db.select({ alias: roomAliases.alias }).from(roomAliases).where(eq(roomAliases.roomId, roomId)).orderBy(asc(roomAliases.alias));
      return { aliases: rows.map((r) => r.alias) };
    },
  });
}
