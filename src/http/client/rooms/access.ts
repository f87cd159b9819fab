// What the room routes share: who may read a room (and which of its states), which rooms
// this server writes, the event ID a write answers with, and state writes that leave
// unchanged state alone.
import { and, eq } from 'drizzle-orm';
import type { PduDraft } from '../../../actors/commands.ts';
import type { CommandResult } from '../../../actors/roomActor.ts';
import type { Session } from '../../../clientapi/accounts.ts';
import { canonicalJson } from '../../../crypto/index.ts';
import { serverOf } from '../../../events/ids.ts';
import { syncapiCurrentState, syncapiRoomEvents } from '../../../store/schema.ts';
import type { StoredEvent } from '../../../syncapi/roomReader.ts';
import { MatrixError, forbidden } from '../../errors.ts';
import { clientWrite } from '../clientWrite.ts';
import type { ClientContext } from '../context.ts';

export function lastEventId(result: CommandResult): string {
  const id = result.existingEventId ?? result.roomEvents.at(-1)?.event.eventId;
  if (!id) throw new MatrixError(500, 'M_UNKNOWN', 'no event was written');
  return id;
}

/** Members read a room; anyone reads a world_readable one. (Its state and members: stateViewOf.) */
export async function requireReadable(ctx: ClientContext, roomId: string, userId: string): Promise<void> {
  if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
  if ((await ctx.rooms.membership(roomId, userId)) === 'join') return;
  if ((await ctx.rooms.historyVisibility(roomId)) === 'world_readable') return;
  throw forbidden('you are not in this room and it is not world_readable');
}

/**
 * Which state of a room a user reads through GET /state, /state/{type}/{stateKey} and
 * /members: the current one, or the one just after the user's departure (`seq`, the
 * sequence of their leave, kick or ban, which it includes).
 */
export type StateView = { kind: 'current' } | { kind: 'departed'; seq: number };

/**
 * Members read the current state, and so does anyone else in a world_readable room (a
 * peek, a preview). A user who left, was kicked or was banned reads the state "of the room
 * when they left" (client-server API, GET /rooms/{roomId}/state) — even in a world_readable
 * room: Synapse answers a user whose membership is leave with the state at that event
 * whatever the history visibility, and peekd follows it. (Synapse refuses a banned user,
 * with a comment calling that bogus; peekd takes a ban as a departure, as its initialSync
 * does.) Anyone else (never a member, invited, knocking): 403 unless world_readable.
 */
export async function stateViewOf(ctx: ClientContext, roomId: string, userId: string): Promise<StateView> {
  if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
  // The member event in force: its membership and where it is in the room, from one row.
  const member = await currentStateEvent(ctx, roomId, 'm.room.member', userId);
  const membership = member?.content.membership;
  if (membership === 'join') return { kind: 'current' };
  // Departed means a member who left: a ban, rejected invite or refused knock of someone
  // never joined gives no view of the room.
  if (member && (membership === 'leave' || membership === 'ban') && (await wasJoinedBefore(ctx, roomId, userId, member.seq))) return { kind: 'departed', seq: member.seq };
  if ((await ctx.rooms.historyVisibility(roomId)) === 'world_readable') return { kind: 'current' };
  throw forbidden('you are not in this room and it is not world_readable');
}

/** Whether `userId` was joined to the room at some point before position `seq`. */
async function wasJoinedBefore(ctx: ClientContext, roomId: string, userId: string, seq: number): Promise<boolean> {
  const facts = await ctx.rooms.visibilityFacts(roomId, userId);
  return facts.membership.some((m) => m.membership === 'join' && m.seq < seq);
}

/** The room's state as `view` shows it; with `beforeSeq`, as it was just before that position (never later than the view). */
export function stateIn(ctx: ClientContext, roomId: string, view: StateView, beforeSeq?: number): Promise<StoredEvent[]> {
  const bound = view.kind === 'departed' ? view.seq + 1 : undefined;
  const before = beforeSeq === undefined ? bound : Math.min(beforeSeq, bound ?? beforeSeq);
  return before === undefined ? ctx.rooms.currentState(roomId) : ctx.rooms.stateBefore(roomId, before);
}

export function requireLocalRoom(ctx: ClientContext, roomId: string): void {
  if (serverOf(roomId) !== ctx.config.serverName) throw new MatrixError(403, 'M_FORBIDDEN', 'this server can only write to rooms it hosts');
}

export interface CurrentStateEvent {
  /** ROOMS stream sequence of the event. */
  seq: number;
  eventId: string;
  sender: string;
  content: Record<string, unknown>;
}

/** The room's current state event of (type, stateKey), as the sync projection holds it. */
export async function currentStateEvent(ctx: ClientContext, roomId: string, type: string, stateKey: string): Promise<CurrentStateEvent | null> {
  const [row] = await ctx.db
    .select({ seq: syncapiCurrentState.seq, eventId: syncapiCurrentState.eventId, sender: syncapiRoomEvents.sender, content: syncapiCurrentState.content })
    .from(syncapiCurrentState)
    .innerJoin(syncapiRoomEvents, eq(syncapiRoomEvents.seq, syncapiCurrentState.seq))
    .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, type), eq(syncapiCurrentState.stateKey, stateKey)));
  return row ? { seq: row.seq, eventId: row.eventId, sender: row.sender, content: row.content as Record<string, unknown> } : null;
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

/**
 * The Guest access module: a guest joins only rooms whose m.room.guest_access is
 * `can_join`, judged on the room as it stands after every write acknowledged so far.
 */
export async function requireGuestMayJoin(ctx: ClientContext, roomId: string): Promise<void> {
  await ctx.barrier.forReads();
  if ((await ctx.rooms.stateContent(roomId, 'm.room.guest_access'))?.guest_access !== 'can_join') {
    throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'guests may not join this room');
  }
}

/**
 * A member event a guest sets through the state endpoint is held to what the membership
 * endpoints allow a guest: its own join (where the room lets guests join) or its own
 * leave; never another user's membership (invite, kick, ban) — as Synapse does.
 */
export async function requireGuestMemberEvent(ctx: ClientContext, session: Session, roomId: string, stateKey: string, content: Record<string, unknown>): Promise<void> {
  const membership = content.membership;
  if (stateKey !== session.userId || (membership !== 'join' && membership !== 'leave')) {
    throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'guests may only join and leave rooms themselves');
  }
  if (membership === 'join') await requireGuestMayJoin(ctx, roomId);
}
