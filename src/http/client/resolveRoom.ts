import { eq } from 'drizzle-orm';
import { isValidRoomAlias, isValidRoomId, serverOf } from '../../events/ids.ts';
import { roomAliases } from '../../store/schema.ts';
import { MatrixError, invalidParam } from '../errors.ts';
import type { ClientContext } from './context.ts';

export interface ResolvedRoom {
  roomId: string;
  /** Servers that may know the room (alias answer, `servers`, the room ID's server). */
  servers: string[];
}

/** A room ID as it is, or an alias resolved locally or through the alias's server. */
export async function resolveRoomIdOrAlias(ctx: ClientContext, idOrAlias: string, servers: string[] = []): Promise<ResolvedRoom> {
  if (idOrAlias.startsWith('!')) {
    if (!isValidRoomId(idOrAlias)) throw invalidParam(`malformed room ID ${idOrAlias}`);
    return { roomId: idOrAlias, servers: [...new Set([...servers, serverOf(idOrAlias)])] };
  }
  if (idOrAlias.startsWith('#')) {
    if (!isValidRoomAlias(idOrAlias)) throw invalidParam(`malformed room alias ${idOrAlias}`);
    if (serverOf(idOrAlias) === ctx.config.serverName) {
      const [row] = await ctx.db.select().from(roomAliases).where(eq(roomAliases.alias, idOrAlias));
      if (!row) throw new MatrixError(404, 'M_NOT_FOUND', `unknown room alias ${idOrAlias}`);
      return { roomId: row.roomId, servers: [ctx.config.serverName] };
    }
    if (!ctx.remote) throw new MatrixError(404, 'M_NOT_FOUND', `unknown room alias ${idOrAlias}`);
    const r = await ctx.remote.resolveAlias(idOrAlias);
    return { roomId: r.roomId, servers: [...new Set([...r.servers, ...servers, serverOf(idOrAlias)])] };
  }
  throw invalidParam(`not a room ID or alias: ${idOrAlias}`);
}

export function requireRoomId(roomId: string): string {
  if (!isValidRoomId(roomId)) throw invalidParam(`malformed room ID ${roomId}`);
  return roomId;
}
