// decide: (state, command, context) → what happens, or a typed DomainError. Pure: no
// I/O, no clock (time arrives in the context), nothing from nats, drizzle or HTTP.
import { peekKey, type PeekEvent, type PeekExpired, type PeekRef } from '../events/peekEvents.ts';
import type {
  DecideContext,
  DeleteInboundPeek,
  EndOutboundPeek,
  RenewInboundPeek,
  RenewOutboundPeek,
  RoomCommand,
  StartDevicePeek,
  StartInboundPeek,
  StartOutboundPeek,
  StopDevicePeek,
  Tick,
} from './commands.ts';
import { BadStateError, DomainError, ForbiddenError, IncompatibleRoomVersionError, NotFoundError } from './errors.ts';
import { decision, endReasonFor, expired, impliedEndings, type Decision } from './decision.ts';
import { decideCreateRoom, decideReceivePdus, decideSendEvents, previewReceived } from './roomDecide.ts';
import { serverAclAllows } from './serverAcl.ts';
import { isEncrypted, isWorldReadable, membershipOf, roomServerOf, stateContent, type LivePeek, type RoomFacts, type RoomState } from './state.ts';

export { decision, endReasonFor, impliedEndings, type Decision };

export function decide(state: RoomState, command: RoomCommand, ctx: DecideContext): Decision | DomainError {
  switch (command.type) {
    case 'StartDevicePeek':
      return startDevicePeek(state, command, ctx);
    case 'StopDevicePeek':
      return stopDevicePeek(state, command, ctx);
    case 'StartInboundPeek':
      return startInboundPeek(state, command, ctx);
    case 'RenewInboundPeek':
      return renewInboundPeek(state, command, ctx);
    case 'DeleteInboundPeek':
      return deleteInboundPeek(state, command, ctx);
    case 'StartOutboundPeek':
      return startOutboundPeek(state, command, ctx);
    case 'RenewOutboundPeek':
      return renewOutboundPeek(state, command, ctx);
    case 'EndOutboundPeek':
      return endOutboundPeek(state, command, ctx);
    case 'Tick':
      return tick(state, command, ctx);
    case 'CreateRoom':
      return decideCreateRoom(state, command, ctx);
    case 'SendEvents':
      return decideSendEvents(state, command, ctx);
    case 'ReceivePdus':
      return decideReceivePdus(state, command, ctx);
    default:
      return assertNever(command);
  }
}

function assertNever(command: never): never {
  throw new Error(`unhandled command ${JSON.stringify(command)}`);
}

// --- helpers ---------------------------------------------------------------------------

/** A live peek whose deadline has passed is dead, whether or not a Tick has run yet. */
export function isDue(peek: LivePeek, now: number): boolean {
  return peek.expiresAt !== undefined && now >= peek.expiresAt;
}

/** Grace after a peek's renewal interval before it is taken for expired (both directions). */
export function inboundGraceMs(intervalMs: number): number {
  return Math.min(Math.ceil(intervalMs / 2), 60_000);
}

function requireRoom(state: RoomState): RoomFacts | NotFoundError {
  return state.room ?? new NotFoundError(`unknown room ${state.roomId}`);
}

/** The live peek under `key`, or, if it is past its deadline, the expiry to record first. */
function liveOrDue(state: RoomState, peek: PeekRef, now: number): { live?: LivePeek; due?: PeekExpired } {
  const live = state.peeks.get(peekKey(peek));
  if (!live) return {};
  if (isDue(live, now)) return { due: expired(state.roomId, live.peek, now, 'timed_out') };
  return { live };
}

// --- device peeks (MSC2753) ------------------------------------------------------------

function startDevicePeek(state: RoomState, cmd: StartDevicePeek, ctx: DecideContext): Decision | DomainError {
  const room = requireRoom(state);
  if (room instanceof DomainError) return room;
  // MSC2753's order: a joined user has nothing to peek, whatever the room's settings.
  if (membershipOf(room, cmd.userId) === 'join') return new BadStateError(`${cmd.userId} is already joined to the room`);
  if (isEncrypted(room)) return new ForbiddenError('the room is encrypted and cannot be peeked');
  if (!isWorldReadable(room)) return new ForbiddenError('the room is not world_readable');
  const peek: PeekRef = { kind: 'device', userId: cmd.userId, deviceId: cmd.deviceId };
  const expiresAt = ctx.now + ctx.peekLifetimeMs;
  const { live, due } = liveOrDue(state, peek, ctx.now);
  if (live) {
    return decision({ peeks: [{ type: 'PeekRenewed', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt }] });
  }
  return decision({
    peeks: [...(due ? [due] : []), { type: 'PeekStarted', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, roomSeq: room.latest.seq }],
  });
}

function stopDevicePeek(state: RoomState, cmd: StopDevicePeek, ctx: DecideContext): Decision | DomainError {
  const peek: PeekRef = { kind: 'device', userId: cmd.userId, deviceId: cmd.deviceId };
  const { live, due } = liveOrDue(state, peek, ctx.now);
  if (due) return decision({ peeks: [due] }); // it had already run out: record that, the peek is gone either way
  if (!live) return new BadStateError(`device ${cmd.deviceId} is not peeking ${state.roomId}`);
  return decision({ peeks: [expired(state.roomId, live.peek, ctx.now, cmd.reason)] });
}

// --- inbound peeks (MSC2444, a remote server peeks a room hosted here) -----------------

function startInboundPeek(state: RoomState, cmd: StartInboundPeek, ctx: DecideContext): Decision | DomainError {
  const room = requireRoom(state);
  if (room instanceof DomainError) return room;
  if (roomServerOf(room) !== ctx.serverName) return new NotFoundError(`room ${state.roomId} is not hosted here`);
  const versions = cmd.roomVersions.length > 0 ? cmd.roomVersions : ['1'];
  if (!versions.includes(room.roomVersion)) return new IncompatibleRoomVersionError(room.roomVersion);
  if (isEncrypted(room)) return new ForbiddenError('the room is encrypted and cannot be peeked');
  if (!isWorldReadable(room)) return new ForbiddenError('the room is not world_readable');
  if (!serverAclAllows(stateContent(room, 'm.room.server_acl'), cmd.server)) return new ForbiddenError(`the room's server ACL denies ${cmd.server}`);
  const peek: PeekRef = { kind: 'inbound', server: cmd.server, peekId: cmd.peekId };
  const renewalIntervalMs = ctx.inboundRenewalIntervalMs;
  const expiresAt = ctx.now + renewalIntervalMs + inboundGraceMs(renewalIntervalMs);
  const { live, due } = liveOrDue(state, peek, ctx.now);
  if (live) {
    return decision({
      peeks: [{ type: 'PeekRenewed', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs }],
    });
  }
  return decision({
    peeks: [...(due ? [due] : []), { type: 'PeekStarted', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs, roomSeq: room.latest.seq }],
  });
}

function renewInboundPeek(state: RoomState, cmd: RenewInboundPeek, ctx: DecideContext): Decision | DomainError {
  const peek: PeekRef = { kind: 'inbound', server: cmd.server, peekId: cmd.peekId };
  const { live, due } = liveOrDue(state, peek, ctx.now);
  if (!live) return new NotFoundError(due ? 'the peek has expired' : 'unknown peek');
  const renewalIntervalMs = ctx.inboundRenewalIntervalMs;
  const expiresAt = ctx.now + renewalIntervalMs + inboundGraceMs(renewalIntervalMs);
  return decision({
    peeks: [{ type: 'PeekRenewed', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs }],
  });
}

function deleteInboundPeek(state: RoomState, cmd: DeleteInboundPeek, ctx: DecideContext): Decision | DomainError {
  const peek: PeekRef = { kind: 'inbound', server: cmd.server, peekId: cmd.peekId };
  const { live, due } = liveOrDue(state, peek, ctx.now);
  if (!live) return new NotFoundError(due ? 'the peek has expired' : 'unknown peek');
  return decision({ peeks: [expired(state.roomId, live.peek, ctx.now, 'remote_deleted')] });
}

// --- outbound peeks (MSC2444, this server peeks a remote room) -------------------------

function startOutboundPeek(state: RoomState, cmd: StartOutboundPeek, ctx: DecideContext): Decision | DomainError {
  const peek: PeekRef = { kind: 'outbound', server: cmd.server, peekId: cmd.peekId };
  const existing = state.peeks.get(peekKey(peek));
  if (existing && !isDue(existing, ctx.now) && existing.peek.kind === 'outbound' && existing.peek.peekId !== cmd.peekId) {
    return new BadStateError(`already peeking ${state.roomId} on ${cmd.server} as ${existing.peek.peekId}`);
  }
  const received = decideReceivePdus(state, { type: 'ReceivePdus', roomId: state.roomId, origin: cmd.server, pdus: cmd.pdus }, ctx);
  if (received instanceof DomainError) return received;
  const room = previewReceived(state, received.received);
  if (room === null) return new BadStateError('the snapshot has no create event');
  const refused = endReasonFor(room, peek);
  if (refused) {
    // The snapshot says the room cannot be peeked: keep its events, start nothing, and end
    // the peeks (including a live outbound one) that it no longer allows.
    if (received.peeks.length === 0) return new ForbiddenError(refused === 'encrypted' ? 'the room is encrypted' : 'the room is not world_readable');
    return decision({ received: received.received, peeks: received.peeks });
  }
  // The host forgets the peek only after its interval and a grace: so do we.
  const expiresAt = ctx.now + cmd.renewalIntervalMs + inboundGraceMs(cmd.renewalIntervalMs);
  const { live, due } = liveOrDue(state, peek, ctx.now);
  const peekEvent: PeekEvent = live
    ? { type: 'PeekRenewed', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs: cmd.renewalIntervalMs }
    : { type: 'PeekStarted', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs: cmd.renewalIntervalMs };
  return decision({ received: received.received, peeks: [...(due ? [due] : []), ...received.peeks, peekEvent] });
}

function renewOutboundPeek(state: RoomState, cmd: RenewOutboundPeek, ctx: DecideContext): Decision | DomainError {
  const peek: PeekRef = { kind: 'outbound', server: cmd.server, peekId: cmd.peekId };
  const live = state.peeks.get(peekKey(peek));
  if (!live || live.peek.kind !== 'outbound' || live.peek.peekId !== cmd.peekId) return new NotFoundError('unknown outbound peek');
  if (isDue(live, ctx.now)) return new NotFoundError('the outbound peek has expired');
  const expiresAt = ctx.now + cmd.renewalIntervalMs + inboundGraceMs(cmd.renewalIntervalMs);
  return decision({
    peeks: [{ type: 'PeekRenewed', v: 1, roomId: state.roomId, peek, at: ctx.now, expiresAt, renewalIntervalMs: cmd.renewalIntervalMs }],
  });
}

function endOutboundPeek(state: RoomState, cmd: EndOutboundPeek, ctx: DecideContext): Decision | DomainError {
  const live = state.peeks.get(peekKey({ kind: 'outbound', server: cmd.server, peekId: '' }));
  if (!live) return new BadStateError(`not peeking ${state.roomId} on ${cmd.server}`);
  return decision({ peeks: [expired(state.roomId, live.peek, ctx.now, cmd.reason)] });
}

// --- timers ----------------------------------------------------------------------------

function tick(state: RoomState, _cmd: Tick, ctx: DecideContext): Decision {
  const peeks: PeekExpired[] = [];
  for (const live of state.peeks.values()) {
    if (isDue(live, ctx.now)) peeks.push(expired(state.roomId, live.peek, ctx.now, 'timed_out'));
  }
  return decision({ peeks });
}

/** The earliest deadline among the room's live peeks (when the next Tick is due). */
export function nextDeadline(state: RoomState): number | undefined {
  let next: number | undefined;
  for (const live of state.peeks.values()) {
    if (live.expiresAt !== undefined && (next === undefined || live.expiresAt < next)) next = live.expiresAt;
  }
  return next;
}
