// What the room routes share: who may read a room, which rooms this server writes, and
// the event ID a write answers with.
import type { CommandResult } from '../../../actors/roomActor.ts';
import { serverOf } from '../../../events/ids.ts';
import { MatrixError, forbidden } from '../../errors.ts';
import type { ClientContext } from '../context.ts';

export function lastEventId(result: CommandResult): string {
  const id = result.existingEventId ?? result.roomEvents.at(-1)?.event.eventId;
  if (!id) throw new MatrixError(500, 'M_UNKNOWN', 'no event was written');
  return id;
}

/** Members read a room; anyone reads a world_readable one. */
export async function requireReadable(ctx: ClientContext, roomId: string, userId: string): Promise<void> {
  if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
  if ((await ctx.rooms.membership(roomId, userId)) === 'join') return;
  if ((await ctx.rooms.historyVisibility(roomId)) === 'world_readable') return;
  throw forbidden('you are not in this room and it is not world_readable');
}

export function requireLocalRoom(ctx: ClientContext, roomId: string): void {
  if (serverOf(roomId) !== ctx.config.serverName) throw new MatrixError(403, 'M_FORBIDDEN', 'this server can only write to rooms it hosts');
}
