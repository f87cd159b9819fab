// What the room routes share: who may read a room, which rooms this server writes, the
// event ID a write answers with, and state writes that leave unchanged state alone.
import { and, eq } from 'drizzle-orm';
import type { PduDraft } from '../../../actors/commands.ts';
import type { CommandResult } from '../../../actors/roomActor.ts';
import type { Session } from '../../../clientapi/accounts.ts';
import { canonicalJson } from '../../../crypto/index.ts';
import { serverOf } from '../../../events/ids.ts';
import { syncapiCurrentState, syncapiRoomEvents } from '../../../store/schema.ts';
import { MatrixError, forbidden } from '../../errors.ts';
import { clientWrite } from '../clientWrite.ts';
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

export interface CurrentStateEvent {
  eventId: string;
  sender: string;
  content: Record<string, unknown>;
}

/** The room's current state event of (type, stateKey), as the sync projection holds it. */
export async function currentStateEvent(ctx: ClientContext, roomId: string, type: string, stateKey: string): Promise<CurrentStateEvent | null> {
  const [row] = await ctx.db
    .select({ eventId: syncapiCurrentState.eventId, sender: syncapiRoomEvents.sender, content: syncapiCurrentState.content })
    .from(syncapiCurrentState)
    .innerJoin(syncapiRoomEvents, eq(syncapiRoomEvents.seq, syncapiCurrentState.seq))
    .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, type), eq(syncapiCurrentState.stateKey, stateKey)));
  return row ? { eventId: row.eventId, sender: row.sender, content: row.content as Record<string, unknown> } : null;
}

function sameContent(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  try {
    return canonicalJson(a) === canonicalJson(b);
  } catch {
    return false; // not canonical JSON: the room actor refuses it anyway
  }
}

/**
 * Sends one state event for a room hosted here, unless the room's state already holds
 * exactly it (same sender, same content): then nothing is written and the answer is the
 * current event's ID, as Synapse does. Judged on the projection once every write this
 * process acknowledged is in it; a change made through another process a moment ago may
 * be missed (at worst one redundant event, or the answer is the event that change replaced).
 */
export async function sendState(ctx: ClientContext, req: { id: string }, session: Session, roomId: string, draft: PduDraft & { state_key: string }): Promise<string> {
  await ctx.barrier.forReads();
  const current = await currentStateEvent(ctx, roomId, draft.type, draft.state_key);
  if (current && current.sender === draft.sender && sameContent(current.content, draft.content)) return current.eventId;
  return lastEventId(await clientWrite(ctx, req, session, { type: 'SendEvents', roomId, events: [draft] }));
}
