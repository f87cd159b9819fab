// Room-event commands: create a room, send events, accept PDUs received over federation.
// Each draft is authorised against the room as the drafts before it leave it, and the
// peeks the new state no longer allows end in the same decision.
import type { Pdu } from '../events/roomEvents.ts';
import { authorize } from './authRules.ts';
import type { CreateRoom, DecideContext, PduDraft, ReceivedPdu, ReceivePdus, SendEvents } from './commands.ts';
import { decision, impliedEndings, type Decision } from './decision.ts';
import { BadStateError, ForbiddenError, InvalidInputError, NotFoundError, type DomainError } from './errors.ts';
import { foldPdu } from './evolve.ts';
import { roomServerOf, txnKey, type RoomFacts, type RoomState } from './state.ts';

/** Folds drafts into a preview of the room (placeholder IDs), authorising each in turn. */
function preview(state: RoomState, roomVersion: string, drafts: PduDraft[], now: number): RoomFacts | DomainError {
  let room = state.room;
  for (const [i, draft] of drafts.entries()) {
    const denied = authorize(room, draft);
    if (denied) return denied;
    const pdu = draftAsPdu(state.roomId, draft, now, (room?.latest.depth ?? 0) + 1);
    room = foldPdu(room, pdu, `$pending${i}`, state.roomsSeq, room?.roomVersion ?? roomVersion);
  }
  if (!room) return new NotFoundError('unknown room');
  return room;
}

function draftAsPdu(roomId: string, draft: PduDraft, now: number, depth: number): Pdu {
  return {
    ...draft,
    room_id: roomId,
    origin_server_ts: now,
    depth,
    prev_events: [],
    auth_events: [],
    hashes: { sha256: '' },
    signatures: {},
  };
}

export function decideCreateRoom(state: RoomState, cmd: CreateRoom, ctx: DecideContext): Decision | DomainError {
  if (state.room) return new BadStateError(`room ${state.roomId} already exists`);
  const first = cmd.events[0];
  if (!first || first.type !== 'm.room.create') return new InvalidInputError('a room starts with m.room.create');
  if (roomIdServer(state.roomId) !== ctx.serverName) return new InvalidInputError('rooms are created on their own server');
  if (roomIdServer(first.sender) !== ctx.serverName) return new ForbiddenError("the creator must be a user of the room's server");
  const room = preview(state, cmd.roomVersion, cmd.events, ctx.now);
  if ('code' in room) return room;
  return decision({ drafts: cmd.events });
}

export function decideSendEvents(state: RoomState, cmd: SendEvents, ctx: DecideContext): Decision | DomainError {
  const sender = cmd.events[0]?.sender ?? '';
  const existing = state.room && cmd.txn ? state.room.txns.get(txnKey(sender, cmd.txn.deviceId, cmd.txn.txnId)) : undefined;
  if (existing) return decision({ existingEventId: existing });
  if (!state.room) return new NotFoundError(`unknown room ${state.roomId}`);
  if (roomServerOf(state.room) !== ctx.serverName) return new ForbiddenError('this server does not host the room');
  if (cmd.events.length === 0) return decision({});
  const room = preview(state, state.room.roomVersion, cmd.events, ctx.now);
  if ('code' in room) return room;
  return decision({ drafts: cmd.events, peeks: impliedEndings(room, state, ctx.now) });
}

export function decideReceivePdus(state: RoomState, cmd: ReceivePdus, ctx: DecideContext): Decision | DomainError {
  if (roomIdServer(state.roomId) === ctx.serverName) return new ForbiddenError('this server hosts the room; it takes no copies');
  let room = state.room;
  const known = new Set(room ? [...room.recentEventIds, ...[...room.state.values()].map((e) => e.eventId)] : []);
  const received = [];
  if (cmd.history) {
    // History fills in what came before: the room must be known, and its state stays as it is.
    if (!room) return new BadStateError(`${state.roomId} is not known here; history needs the room first`);
    for (const item of cmd.pdus) {
      if (item.pdu.room_id !== state.roomId) return new InvalidInputError(`event ${item.eventId} is for another room`);
      if (known.has(item.eventId)) continue;
      known.add(item.eventId);
      received.push({ ...item, history: true });
    }
    return decision({ received });
  }
  for (const item of cmd.pdus) {
    if (item.pdu.room_id !== state.roomId) return new InvalidInputError(`event ${item.eventId} is for another room`);
    if (known.has(item.eventId)) continue;
    const next = foldPdu(room, item.pdu, item.eventId, state.roomsSeq, room?.roomVersion ?? versionOf(item.pdu));
    if (next === null) continue; // nothing is kept before the room's create event
    room = next;
    known.add(item.eventId);
    received.push(item);
  }
  return decision({ received, peeks: room ? impliedEndings(room, state, ctx.now) : [] });
}

/** The room as it will be once `received` is appended (for deciding on a snapshot). */
export function previewReceived(state: RoomState, received: ReceivedPdu[]): RoomFacts | null {
  let room = state.room;
  for (const item of received) room = foldPdu(room, item.pdu, item.eventId, state.roomsSeq, room?.roomVersion ?? versionOf(item.pdu)) ?? room;
  return room;
}

function versionOf(pdu: Pdu): string {
  const v = pdu.type === 'm.room.create' ? pdu.content.room_version : undefined;
  return typeof v === 'string' ? v : '1';
}

function roomIdServer(roomId: string): string {
  return roomId.slice(roomId.indexOf(':') + 1);
}
