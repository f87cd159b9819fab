// The subset of the room version 10 authorization rules that rooms hosted here need:
// membership transitions for public and invite-only rooms, and power levels for state
// and message events. Pure.
import type { PduDraft } from './commands.ts';
import { BadStateError, ForbiddenError, InvalidInputError, NotFoundError, type DomainError } from './errors.ts';
import { creatorOf, joinRule, membershipOf, stateContent, type RoomFacts } from './state.ts';
import { isValidUserId } from '../events/ids.ts';

interface PowerLevels {
  users: Record<string, number>;
  usersDefault: number;
  events: Record<string, number>;
  eventsDefault: number;
  stateDefault: number;
  ban: number;
  kick: number;
  invite: number;
  redact: number;
}

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isInteger(v) ? v : typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : dflt;
}

export function powerLevels(room: RoomFacts): PowerLevels | null {
  const c = stateContent(room, 'm.room.power_levels');
  if (!c) return null;
  const record = (v: unknown): Record<string, number> => {
    const out: Record<string, number> = {};
    if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out[k] = num(x, 0);
    return out;
  };
  return {
    users: record(c.users),
    usersDefault: num(c.users_default, 0),
    events: record(c.events),
    eventsDefault: num(c.events_default, 0),
    stateDefault: num(c.state_default, 50),
    ban: num(c.ban, 50),
    kick: num(c.kick, 50),
    invite: num(c.invite, 0),
    redact: num(c.redact, 50),
  };
}

export function userPowerLevel(room: RoomFacts, userId: string): number {
  const pl = powerLevels(room);
  if (!pl) return creatorOf(room) === userId ? 100 : 0;
  return pl.users[userId] ?? pl.usersDefault;
}

export function requiredPowerLevel(room: RoomFacts, type: string, isState: boolean): number {
  const pl = powerLevels(room);
  if (!pl) return 0;
  return pl.events[type] ?? (isState ? pl.stateDefault : pl.eventsDefault);
}

/** Null when `draft` may be appended to `room` as it stands; otherwise why not. */
export function authorize(room: RoomFacts | null, draft: PduDraft): DomainError | null {
  if (draft.type === 'm.room.create') {
    if (room !== null) return new BadStateError('the room already exists');
    if (draft.state_key !== '') return new InvalidInputError('m.room.create needs an empty state key');
    return null;
  }
  if (room === null) return new NotFoundError('unknown room');
  if (draft.type === 'm.room.member') return authorizeMembership(room, draft);
  const sender = membershipOf(room, draft.sender);
  if (sender !== 'join') return new ForbiddenError(`${draft.sender} is not in the room`);
  const isState = typeof draft.state_key === 'string';
  if (isState && draft.state_key!.startsWith('@') && draft.state_key !== draft.sender) {
    return new ForbiddenError('you cannot set state keyed by another user ID');
  }
  if (userPowerLevel(room, draft.sender) < requiredPowerLevel(room, draft.type, isState)) {
    return new ForbiddenError(`you do not have a high enough power level to send ${draft.type}`);
  }
  return null;
}

function authorizeMembership(room: RoomFacts, draft: PduDraft): DomainError | null {
  const target = draft.state_key;
  if (typeof target !== 'string' || !isValidUserId(target)) return new InvalidInputError('m.room.member needs a user ID state key');
  const membership = draft.content.membership;
  const current = membershipOf(room, target);
  const senderMembership = membershipOf(room, draft.sender);
  switch (membership) {
    case 'join': {
      if (target !== draft.sender) return new ForbiddenError('you can only join as yourself');
      if (current === 'ban') return new ForbiddenError('you are banned from this room');
      if (current === 'join') return null;
      const onlyCreate = room.eventCount === 1 && creatorOf(room) === draft.sender;
      if (onlyCreate || current === 'invite' || joinRule(room) === 'public') return null;
      return new ForbiddenError('you are not invited to this room');
    }
    case 'leave': {
      if (target === draft.sender) {
        if (current === 'join' || current === 'invite' || current === 'knock') return null;
        return new ForbiddenError(`${target} is not in the room`);
      }
      // Kick (or unban): room version 10, m.room.member rule 4.4 — a banned target needs
      // the ban level, and any target the kick level and a power level below the sender's.
      if (senderMembership !== 'join') return new ForbiddenError(`${draft.sender} is not in the room`);
      const pl = powerLevels(room);
      const senderLevel = userPowerLevel(room, draft.sender);
      if (current === 'ban' && senderLevel < (pl?.ban ?? 50)) return new ForbiddenError('you do not have a high enough power level to unban that user');
      if (senderLevel < (pl?.kick ?? 50) || senderLevel <= userPowerLevel(room, target)) {
        return new ForbiddenError('you do not have a high enough power level to remove that user');
      }
      return null;
    }
    case 'invite': {
      if (senderMembership !== 'join') return new ForbiddenError(`${draft.sender} is not in the room`);
      if (current === 'join' || current === 'ban') return new ForbiddenError(`${target} is already ${current === 'join' ? 'in the room' : 'banned'}`);
      if (userPowerLevel(room, draft.sender) < (powerLevels(room)?.invite ?? 0)) return new ForbiddenError('you cannot invite users');
      return null;
    }
    case 'ban': {
      if (senderMembership !== 'join') return new ForbiddenError(`${draft.sender} is not in the room`);
      const needed = powerLevels(room)?.ban ?? 50;
      if (userPowerLevel(room, draft.sender) < needed || userPowerLevel(room, draft.sender) <= userPowerLevel(room, target)) {
        return new ForbiddenError('you do not have a high enough power level to ban');
      }
      return null;
    }
    default:
      return new InvalidInputError(`unsupported membership ${String(membership)}`);
  }
}
