// Lazy-loaded members in incremental /sync (client-server API, "Lazy-loading room members";
// the scenarios of sytest's tests/31sync/15lazy-members.pl): an incremental section carries
// the member events of its timeline's senders that the device has not been sent, the
// membership changes of a gap, and not a member event the device already has — unless the
// filter asks for `include_redundant_members`. A named room has no heroes, so lazy loading
// sends no member events for them. The reader's own member event comes with the full state
// (the specification requires it).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let n = 0;
const user = (name: string) => TestUser.register(hs.url, `${name}${++n}`);

beforeAll(async () => {
  hs = await startTestPeekd();
});

afterAll(async () => {
  await hs?.dropAll();
});

const LAZY = JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 10 } } });
const REDUNDANT = JSON.stringify({ room: { state: { lazy_load_members: true, include_redundant_members: true }, timeline: { limit: 10 } } });

/** The user IDs of the member events in a room section's state, sorted. */
const members = (body: any, roomId: string, section = 'join') =>
  ((body.rooms?.[section]?.[roomId]?.state?.events ?? []) as any[])
    .filter((e) => e.type === 'm.room.member')
    .map((e) => e.state_key as string)
    .sort();

/** A named room with alice and the others joined (named: no heroes, as in sytest). */
async function namedRoom(alice: TestUser, others: TestUser[]): Promise<string> {
  const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat', name: 'A room name' });
  for (const u of others) expect((await u.join(roomId)).status).toBe(200);
  return roomId;
}

/** `count` messages from `u`; returns the last one's ID. */
async function say(u: TestUser, roomId: string, count: number): Promise<string> {
  let last = '';
  for (let i = 1; i <= count; i++) last = await u.send(roomId, `message ${i} from ${u.userId}`);
  return last;
}

/** Waits until `reader` can read `eventId` as the room's newest event (then its /sync holds it too). */
async function visible(reader: TestUser, roomId: string, eventId: string): Promise<void> {
  await until(`${eventId} readable`, async () => (await reader.messages(roomId, 1))[0]?.event_id === eventId);
}

/**
 * alice, bob and charlie in a named room where bob said the last ten things, and alice's
 * initial lazy sync: bob's member event and her own, nobody else's.
 */
async function bobSpokeLast() {
  const [alice, bob, charlie] = await Promise.all([user('alice'), user('bob'), user('charlie')]);
  const roomId = await namedRoom(alice, [bob, charlie]);
  await visible(alice, roomId, await say(bob, roomId, 10));
  const first = await alice.sync({ filter: LAZY });
  expect(members(first, roomId)).toEqual([alice.userId, bob.userId].sort());
  return { alice, bob, charlie, roomId, first };
}

describe('lazy-loaded members in /sync', () => {
  it('initial sync of a named room: the timeline’s senders and the reader, no heroes', async () => {
    const [alice, bob, charlie] = await Promise.all([user('alice'), user('bob'), user('charlie')]);
    const roomId = await namedRoom(alice, [bob, charlie]);
    await say(bob, roomId, 10);
    await visible(alice, roomId, await say(charlie, roomId, 10));
    const body = await alice.sync({ filter: LAZY });
    expect(members(body, roomId)).toEqual([alice.userId, charlie.userId].sort());
    expect(body.rooms.join[roomId].summary).toEqual({ 'm.joined_member_count': 3, 'm.invited_member_count': 0 });
  });

  it('incremental, no gap: the member event of a sender the device was not sent', async () => {
    const { alice, charlie, roomId, first } = await bobSpokeLast();
    await visible(alice, roomId, await say(charlie, roomId, 1));
    const next = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(next.rooms.join[roomId].timeline.limited).toBe(false);
    expect(members(next, roomId)).toEqual([charlie.userId]);
    // Without lazy loading, a gapless incremental section has no state at all.
    expect(members(await alice.sync({ since: first.next_batch }), roomId)).toEqual([]);
  });

  it('incremental with a gap: the timeline’s senders, not those of the gap — but the gap’s joins', async () => {
    const [alice, bob, charlie, dave, erin] = await Promise.all([user('alice'), user('bob'), user('charlie'), user('dave'), user('erin')]);
    const roomId = await namedRoom(alice, [bob, charlie, dave]);
    await visible(alice, roomId, await say(bob, roomId, 10));
    const first = await alice.sync({ filter: LAZY });
    expect(members(first, roomId)).toEqual([alice.userId, bob.userId].sort());

    // charlie's ten fall in the gap, dave's ten fill the timeline; erin joins in the gap.
    await say(charlie, roomId, 5);
    expect((await erin.join(roomId)).status).toBe(200);
    await say(charlie, roomId, 5);
    await visible(alice, roomId, await say(dave, roomId, 10));
    const next = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(next.rooms.join[roomId].timeline.limited).toBe(true);
    expect(members(next, roomId)).toEqual([dave.userId, erin.userId].sort());
  });

  it('a leave that opens a gapless timeline is in the state section too (sytest: leaves in non-gapped syncs)', async () => {
    const { alice, bob, charlie, roomId, first } = await bobSpokeLast();
    expect((await charlie.leave(roomId)).status).toBe(200);
    await visible(alice, roomId, await say(bob, roomId, 5));
    const next = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(next.rooms.join[roomId].timeline.limited).toBe(false);
    const state = next.rooms.join[roomId].state.events.filter((e: any) => e.type === 'm.room.member');
    expect(state.map((e: any) => [e.state_key, e.content.membership])).toEqual([[charlie.userId, 'leave']]);
  });

  it('does not send a member event the device has, unless include_redundant_members asks', async () => {
    for (const [filter, again] of [
      [LAZY, false],
      [REDUNDANT, true],
    ] as const) {
      const [alice, bob, charlie] = await Promise.all([user('alice'), user('bob'), user('charlie')]);
      const roomId = await namedRoom(alice, [bob, charlie]);
      await say(bob, roomId, 10);
      await visible(alice, roomId, await say(charlie, roomId, 5));
      const first = await alice.sync({ filter });
      expect(members(first, roomId)).toEqual([alice.userId, bob.userId, charlie.userId].sort());

      await say(bob, roomId, 1);
      await visible(alice, roomId, await say(charlie, roomId, 1));
      const next = await alice.sync({ filter, since: first.next_batch });
      expect(members(next, roomId)).toEqual(again ? [bob.userId, charlie.userId].sort() : []);
    }
  });

  it('sends the new member event of a sender the device knew, when it changed in a gap', async () => {
    const { alice, bob, charlie, roomId, first } = await bobSpokeLast();
    await visible(alice, roomId, await say(charlie, roomId, 1));
    const second = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(members(second, roomId)).toEqual([charlie.userId]);
    // bob renames himself, charlie's ten messages push that out of the timeline, bob speaks.
    const renamed = await bob.setState(roomId, 'm.room.member', { membership: 'join', displayname: 'Robert' }, bob.userId);
    await say(charlie, roomId, 10);
    await visible(alice, roomId, await say(bob, roomId, 1));
    const next = await alice.sync({ filter: LAZY, since: second.next_batch });
    expect(next.rooms.join[roomId].timeline.limited).toBe(true);
    const state = next.rooms.join[roomId].state.events.filter((e: any) => e.type === 'm.room.member');
    expect(state.map((e: any) => [e.state_key, e.event_id, e.content.displayname])).toEqual([[bob.userId, renamed, 'Robert']]);
  });

  it('sends the members again to a device that asks again from the same position (its answer was lost)', async () => {
    const { alice, bob, charlie, roomId, first } = await bobSpokeLast();
    await visible(alice, roomId, await say(charlie, roomId, 1));
    const lost = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(members(lost, roomId)).toEqual([charlie.userId]);
    const retried = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(members(retried, roomId)).toEqual([charlie.userId]);
    // Once the device syncs on from that answer, charlie's member event is its own.
    await visible(alice, roomId, await say(charlie, roomId, 1));
    expect(members(await alice.sync({ filter: LAZY, since: retried.next_batch }), roomId)).toEqual([]);
    // A new initial sync starts over: the device may have lost everything it was sent.
    await visible(alice, roomId, await say(bob, roomId, 10));
    const fresh = await alice.sync({ filter: LAZY });
    expect(members(fresh, roomId)).toEqual([alice.userId, bob.userId].sort());
    await visible(alice, roomId, await say(charlie, roomId, 1));
    expect(members(await alice.sync({ filter: LAZY, since: fresh.next_batch }), roomId)).toEqual([charlie.userId]);
  });

  it('after leaving and joining again, a sender renamed meanwhile comes with the new member event', async () => {
    const { alice, bob, charlie, roomId } = await bobSpokeLast();
    const lazyCharlie = await charlie.sync({ filter: LAZY });
    expect(members(lazyCharlie, roomId)).toEqual([bob.userId, charlie.userId].sort());
    expect((await charlie.leave(roomId)).status).toBe(200);
    const renamed = await bob.setState(roomId, 'm.room.member', { membership: 'join', displayname: 'Robert' }, bob.userId);
    await say(alice, roomId, 10);
    expect((await charlie.join(roomId)).status).toBe(200);
    const back = await charlie.syncUntil(lazyCharlie.next_batch, (b) => b.rooms?.join?.[roomId] !== undefined, 10_000, { filter: LAZY });
    await visible(charlie, roomId, await say(bob, roomId, 1));
    const next = await charlie.sync({ filter: LAZY, since: back.body.next_batch });
    // Not in the timeline (that is bob's message alone): the state carries his new member event.
    expect(next.rooms.join[roomId].timeline.events.map((e: any) => e.sender)).toEqual([bob.userId]);
    const bobs = next.rooms.join[roomId].state.events.filter((e: any) => e.type === 'm.room.member');
    expect(bobs.map((e: any) => [e.state_key, e.event_id, e.content.displayname])).toEqual([[bob.userId, renamed, 'Robert']]);
  });

  it('a room that loses its name gets heroes in its summary, and their member events', async () => {
    const [alice, bob, charlie] = await Promise.all([user('alice'), user('bob'), user('charlie')]);
    const roomId = await namedRoom(alice, [bob, charlie]);
    await visible(alice, roomId, await say(alice, roomId, 10));
    const first = await alice.sync({ filter: LAZY });
    expect(first.rooms.join[roomId].summary['m.heroes']).toBeUndefined();
    expect(members(first, roomId)).toEqual([alice.userId]);
    await visible(alice, roomId, await alice.setState(roomId, 'm.room.name', {}));
    const next = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(next.rooms.join[roomId].summary).toEqual({ 'm.heroes': [bob.userId, charlie.userId], 'm.joined_member_count': 3, 'm.invited_member_count': 0 });
    expect(members(next, roomId)).toEqual([bob.userId, charlie.userId].sort());
  });

  it('a member event carried only by a lost answer is sent when it is needed next', async () => {
    const { alice, bob, charlie, roomId, first } = await bobSpokeLast();
    await visible(alice, roomId, await say(charlie, roomId, 1));
    const lost = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(members(lost, roomId)).toEqual([charlie.userId]);
    // Before the device asks again, bob's ten messages push charlie's out of the timeline.
    await visible(alice, roomId, await say(bob, roomId, 10));
    const retried = await alice.sync({ filter: LAZY, since: first.next_batch });
    expect(retried.rooms.join[roomId].timeline.events.every((e: any) => e.sender === bob.userId)).toBe(true);
    expect(members(retried, roomId)).toEqual([]);
    await visible(alice, roomId, await say(charlie, roomId, 1));
    const next = await alice.sync({ filter: LAZY, since: retried.next_batch });
    expect(members(next, roomId)).toEqual([charlie.userId]);
  });

  it('a peeking device gets the senders’ member events in its incremental sections', async () => {
    const [alice, bob, peeker] = await Promise.all([user('alice'), user('bob'), user('peeker')]);
    const { room_id: roomId } = await alice.createWorldReadableRoom({ preset: 'public_chat', name: 'Peeked' });
    expect((await bob.join(roomId)).status).toBe(200);
    await visible(alice, roomId, await say(alice, roomId, 10));
    expect((await peeker.peek(roomId)).status).toBe(200);
    const first = await peeker.sync({ filter: LAZY });
    expect(members(first, roomId, 'peek')).toEqual([alice.userId]);
    await visible(alice, roomId, await say(bob, roomId, 1));
    const next = await peeker.sync({ filter: LAZY, since: first.next_batch });
    expect(members(next, roomId, 'peek')).toEqual([bob.userId]);
  });
});
