// The membership authorization rules of room version 10 that ban, unban and kick rely on:
// who may remove or ban whom (power levels), and what a ban stops.
import { describe, expect, it } from 'vitest';
import { authorize } from '../../src/actors/authRules.ts';
import type { PduDraft } from '../../src/actors/commands.ts';
import { ForbiddenError, InvalidInputError } from '../../src/actors/errors.ts';
import type { StoredEvent } from '../../src/actors/evolve.ts';
import type { RoomFacts } from '../../src/actors/state.ts';
import { ALICE, BOB, DAVE, ROOM, member, publicRoom, stateEvent, stateOf } from './decider.spec-helpers.ts';

const CAROL = '@carol:example.org';

/** The public room, with BOB (power 50) and DAVE (power 0) joined, and more events after. */
function roomWith(extra: StoredEvent[] = [], powerLevels: Record<string, unknown> = {}): RoomFacts {
  const events = [
    ...publicRoom(),
    member(40, '$bob-join', BOB, 'join'),
    member(41, '$dave-join', DAVE, 'join'),
    stateEvent(42, '$power2', 'm.room.power_levels', ALICE, { users: { [ALICE]: 100, [BOB]: 50 }, users_default: 0, ...powerLevels }),
    ...extra,
  ];
  const room = stateOf(ROOM, events).room;
  if (!room) throw new Error('spec error: no room');
  return room;
}

const memberDraft = (sender: string, target: string, membership: string, extra: Record<string, unknown> = {}): PduDraft => ({
  type: 'm.room.member',
  sender,
  state_key: target,
  content: { membership, ...extra },
});

describe('ban', () => {
  it('a user at the ban level bans a user with less power, joined or not', () => {
    expect(authorize(roomWith(), memberDraft(BOB, DAVE, 'ban', { reason: 'spam' }))).toBeNull();
    expect(authorize(roomWith(), memberDraft(BOB, CAROL, 'ban'))).toBeNull();
  });

  it('is refused below the ban level, against an equal or higher power level, and by a non-member', () => {
    expect(authorize(roomWith(), memberDraft(DAVE, CAROL, 'ban'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith([], { users: { [ALICE]: 100, [BOB]: 50, [DAVE]: 50 } }), memberDraft(BOB, DAVE, 'ban'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith(), memberDraft(BOB, ALICE, 'ban'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith(), memberDraft(CAROL, DAVE, 'ban'))).toBeInstanceOf(ForbiddenError);
  });

  it("follows the room's ban level", () => {
    expect(authorize(roomWith([], { ban: 0, users: { [ALICE]: 100, [BOB]: 50, [DAVE]: 10 } }), memberDraft(DAVE, CAROL, 'ban'))).toBeNull();
    expect(authorize(roomWith([], { ban: 75 }), memberDraft(BOB, DAVE, 'ban'))).toBeInstanceOf(ForbiddenError);
  });

  it('a banned user may not join, be invited, or leave by themselves', () => {
    const banned = roomWith([member(43, '$dave-ban', DAVE, 'ban', { sender: ALICE })]);
    expect(authorize(banned, memberDraft(DAVE, DAVE, 'join'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(banned, memberDraft(ALICE, DAVE, 'invite'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(banned, memberDraft(DAVE, DAVE, 'leave'))).toBeInstanceOf(ForbiddenError);
  });
});

describe('kick', () => {
  it('a user at the kick level removes a member with less power', () => {
    expect(authorize(roomWith(), memberDraft(BOB, DAVE, 'leave', { reason: 'bye' }))).toBeNull();
  });

  it('is refused below the kick level or against an equal or higher power level', () => {
    expect(authorize(roomWith(), memberDraft(DAVE, BOB, 'leave'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith(), memberDraft(BOB, ALICE, 'leave'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith([], { kick: 75 }), memberDraft(BOB, DAVE, 'leave'))).toBeInstanceOf(ForbiddenError);
    expect(authorize(roomWith([], { kick: 0, users: { [ALICE]: 100, [BOB]: 50, [DAVE]: 10 } }), memberDraft(DAVE, CAROL, 'leave'))).toBeNull();
  });

  it('a kicked user may join a public room again', () => {
    const kicked = roomWith([member(43, '$dave-kick', DAVE, 'leave', { sender: BOB })]);
    expect(authorize(kicked, memberDraft(DAVE, DAVE, 'join'))).toBeNull();
  });
});

describe('unban', () => {
  const banned = (powerLevels: Record<string, unknown> = {}) => roomWith([member(43, '$dave-ban', DAVE, 'ban', { sender: ALICE })], powerLevels);

  it('a user at the ban and kick levels lifts a ban with a leave event; the user may join again', () => {
    expect(authorize(banned(), memberDraft(BOB, DAVE, 'leave'))).toBeNull();
    const unbanned = roomWith([member(43, '$dave-ban', DAVE, 'ban', { sender: ALICE }), member(44, '$dave-unban', DAVE, 'leave', { sender: BOB })]);
    expect(authorize(unbanned, memberDraft(DAVE, DAVE, 'join'))).toBeNull();
  });

  it('needs the ban level', () => {
    const denied = authorize(banned({ ban: 75 }), memberDraft(BOB, DAVE, 'leave'));
    expect(denied).toBeInstanceOf(ForbiddenError);
    expect(denied?.message).toMatch(/unban/);
  });

  // Room version 10, m.room.member rule 4.4: the ban level is checked first, then the kick
  // level applies to every leave of another user, a banned one included.
  it('needs the kick level too', () => {
    expect(authorize(banned({ kick: 75 }), memberDraft(BOB, DAVE, 'leave'))).toBeInstanceOf(ForbiddenError);
  });
});

it('a member event needs a user ID state key', () => {
  expect(authorize(roomWith(), memberDraft(BOB, 'not-a-user', 'ban'))).toBeInstanceOf(InvalidInputError);
});
