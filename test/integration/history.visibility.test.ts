// History visibility as a Matrix client meets it, over real HTTP against a running peekd
// (real NATS JetStream, real Postgres). For each setting a room where alice writes before
// bob is invited, while he is invited, while he is joined and after he has left; then every
// reading endpoint (/messages both ways, /event, /context, /sync initial and incremental)
// must show bob — and carol, who was never in the room — exactly what the rule allows.
// The expected sets are computed from the rule over the room's stored events, never copied
// from an answer. Also: a change of setting mid-history, and devices trying to end each
// other's peeks.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../../src/store/db.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { auditUntil, enc, expectError, request, roomsIn, TestUser } from '../helpers/matrix.ts';

const ADMIN = 'admin-secret-visibility-tests';
const SETTINGS = ['joined', 'invited', 'shared', 'world_readable'] as const;
type Setting = (typeof SETTINGS)[number];
/** When alice writes, relative to bob's membership. */
const PHASES = ['before invite', 'while invited', 'while joined', 'after leave'] as const;
type Phase = (typeof PHASES)[number];
/** A timeline limit well above any room here: a sync timeline then holds every visible event. */
const BIG_TIMELINE = JSON.stringify({ room: { timeline: { limit: 500 } } });
/** Small pages, so /messages has to read past runs of hidden events. */
const PAGE = 3;

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let url: string;
let alice: TestUser;
let n = 0;
const user = (name: string) => TestUser.register(url, `${name}${++n}`);
const v3 = (path: string) => `/_matrix/client/v3${path}`;

/** What the summary reports. */
const tally = { endpoints: new Map<string, Set<string>>(), eventsChecked: 0, hiddenRefused: 0, visibleServed: 0 };
function checked(setting: string, endpoint: string): void {
  if (!tally.endpoints.has(setting)) tally.endpoints.set(setting, new Set());
  tally.endpoints.get(setting)!.add(endpoint);
}

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: ADMIN } });
  url = hs.url;
  alice = await TestUser.register(url, 'alice');
});

afterAll(async () => {
  const endpoints = new Set([...tally.endpoints.values()].flatMap((s) => [...s]));
  const perSetting = [...tally.endpoints].map(([setting, e]) => `${setting} ×${e.size}`).join(', ');
  console.log(
    `history visibility: settings × endpoints checked: ${perSetting} (of ${[...endpoints].join(', ')}); ` +
      `${tally.eventsChecked} per-event answers (/event, /context) checked: ${tally.visibleServed} visible events served, ${tally.hiddenRefused} hidden events refused`,
  );
  await hs?.dropAll();
});

// --- the room as stored, and the rule -------------------------------------------------------

interface RoomEvent {
  seq: number;
  eventId: string;
  pdu: { type: string; sender: string; state_key?: string; content?: Record<string, any> };
}

/** Every event of the room, in stream order, straight from the sync projection's table. */
async function storedEvents(roomId: string): Promise<RoomEvent[]> {
  await hs.peekd.client!.barrier.forReads(); // every write acknowledged so far, in the tables
  const rows = rowsOf<{ seq: string | number; event_id: string; pdu: RoomEvent['pdu'] }>(
    await hs.peekd.database.db.execute(sql`select seq, event_id, pdu from syncapi_room_events where room_id = ${roomId} order by seq`),
  );
  return rows.map((r) => ({ seq: Number(r.seq), eventId: r.event_id, pdu: r.pdu }));
}

/**
 * The Matrix rule, walked event by event: with the setting and the viewer's membership just
 * before E — world_readable, or joined, or shared and the viewer joins at or after E, or
 * invited and the viewer is invited. A setting event counts under the setting before or
 * after it; the viewer's own member event under the membership before or after it.
 */
/**
 * What a peek's /sync timeline shows of `events` (the room up to the sync): the state events
 * still in force at its end, whatever the setting they were sent under (a peek starts at
 * m.room.create like a join), and the other events the peeker may see.
 */
function peekTimeline(events: RoomEvent[], viewer: string): RoomEvent[] {
  const visible = new Set(visibleTo(events, viewer));
  const inForce = new Map<string, RoomEvent>();
  for (const e of events) if (e.pdu.state_key !== undefined) inForce.set(`${e.pdu.type}\u0000${e.pdu.state_key}`, e);
  const current = new Set(inForce.values());
  return events.filter((e) => visible.has(e) || current.has(e));
}

function visibleTo(events: RoomEvent[], viewer: string): RoomEvent[] {
  const isOwn = (e: RoomEvent) => e.pdu.type === 'm.room.member' && e.pdu.state_key === viewer;
  const settingOf = (e: RoomEvent) => {
    const v = e.pdu.content?.history_visibility;
    return ['world_readable', 'shared', 'invited', 'joined'].includes(v) ? (v as string) : 'shared';
  };
  let setting = 'shared';
  let membership: string | undefined;
  return events.filter((e, i) => {
    const joinsLater = events.slice(i).some((x) => isOwn(x) && x.pdu.content?.membership === 'join');
    const settings = [setting];
    const memberships = [membership];
    const isSetting = e.pdu.type === 'm.room.history_visibility' && e.pdu.state_key === '';
    if (isSetting) settings.push(settingOf(e));
    if (isOwn(e)) memberships.push(e.pdu.content?.membership);
    const visible = settings.some((s) => memberships.some((m) => s === 'world_readable' || m === 'join' || (s === 'shared' && joinsLater) || (s === 'invited' && m === 'invite')));
    if (isSetting) setting = settingOf(e);
    if (isOwn(e)) membership = e.pdu.content?.membership;
    return visible;
  });
}

/** The room's state just before `seq`: the newest event of each (type, state_key) before it. */
function stateBefore(events: RoomEvent[], seq: number): string[] {
  const byKey = new Map<string, string>();
  for (const e of events) if (e.seq < seq && e.pdu.state_key !== undefined) byKey.set(`${e.pdu.type}\u0000${e.pdu.state_key}`, e.eventId);
  return [...byKey.values()].sort();
}

/**
 * The state a client holds after a sync section: its `state`, then the timeline's state
 * events in order, by (type, state_key).
 */
function clientStateAfter(section: any): Record<string, string> {
  const byKey: Record<string, string> = {};
  for (const e of [...(section.state?.events ?? []), ...(section.timeline?.events ?? [])]) if (e.state_key !== undefined) byKey[`${e.type}|${e.state_key}`] = e.event_id;
  return byKey;
}

/** The room's state just after the section's last timeline event, keyed like clientStateAfter. */
function stateAfterTimeline(events: RoomEvent[], section: any): Record<string, string> {
  const last = events.find((e) => e.eventId === section.timeline.events.at(-1)?.event_id)!;
  const byKey: Record<string, string> = {};
  for (const e of events) if (e.seq <= last.seq && e.pdu.state_key !== undefined) byKey[`${e.pdu.type}|${e.pdu.state_key}`] = e.eventId;
  return byKey;
}

const ids = (events: { eventId: string }[]) => events.map((e) => e.eventId);
const eventIds = (events: any[]) => events.map((e: any) => e.event_id as string);

// --- the reading endpoints ------------------------------------------------------------------

/** Every event /messages gives `reader` in direction `dir`, following `end` until it is absent. */
async function paginate(reader: TestUser, roomId: string, dir: 'b' | 'f', from?: string): Promise<string[]> {
  const seen: string[] = [];
  for (let page = 0; page < 100; page++) {
    const q = new URLSearchParams({ dir, limit: String(PAGE) });
    if (from !== undefined) q.set('from', from);
    const body = await reader.ok('GET', v3(`/rooms/${enc(roomId)}/messages?${q}`));
    expect(body.chunk.length).toBeLessThanOrEqual(PAGE);
    seen.push(...eventIds(body.chunk));
    if (body.end === undefined) return seen;
    expect(body.end).not.toBe(from);
    from = body.end;
  }
  throw new Error('/messages never ended');
}

/**
 * Everything `reader` can read of the room through /messages (both ways), /event and
 * /context for every stored event is exactly `visible`, in order.
 */
async function expectReads(setting: string, reader: TestUser, roomId: string, events: RoomEvent[], visible: RoomEvent[]): Promise<void> {
  expect(await paginate(reader, roomId, 'b')).toEqual(ids(visible).reverse());
  expect(await paginate(reader, roomId, 'f')).toEqual(ids(visible));
  checked(setting, '/messages?dir=b');
  checked(setting, '/messages?dir=f');
  const shown = new Set(ids(visible));
  for (const e of events) {
    const single = await reader.req('GET', v3(`/rooms/${enc(roomId)}/event/${enc(e.eventId)}`));
    const context = await reader.req('GET', v3(`/rooms/${enc(roomId)}/context/${enc(e.eventId)}?limit=200`));
    tally.eventsChecked += 2;
    if (shown.has(e.eventId)) {
      tally.visibleServed += 2;
      expect(single.status).toBe(200);
      expect(single.body).toMatchObject({ event_id: e.eventId, type: e.pdu.type, sender: e.pdu.sender });
      expect(context.status).toBe(200);
      expect(context.body.event.event_id).toBe(e.eventId);
      // The window covers the whole room: what surrounds the event is every visible event.
      expect(eventIds(context.body.events_before)).toEqual(ids(visible.filter((x) => x.seq < e.seq)).reverse());
      expect(eventIds(context.body.events_after)).toEqual(ids(visible.filter((x) => x.seq > e.seq)));
      if (e.pdu.type !== 'm.room.message') continue;
      // A narrow window, continued with /messages from its tokens, reaches the same events.
      const narrow = await reader.ok('GET', v3(`/rooms/${enc(roomId)}/context/${enc(e.eventId)}?limit=2`));
      const before = [...eventIds(narrow.events_before), ...(await paginate(reader, roomId, 'b', narrow.start))];
      const after = [...eventIds(narrow.events_after), ...(await paginate(reader, roomId, 'f', narrow.end))];
      expect(before).toEqual(ids(visible.filter((x) => x.seq < e.seq)).reverse());
      expect(after).toEqual(ids(visible.filter((x) => x.seq > e.seq)));
    } else {
      tally.hiddenRefused += 2;
      expectError(single, 404, 'M_NOT_FOUND');
      expectError(context, 404, 'M_NOT_FOUND');
    }
  }
  checked(setting, '/event');
  checked(setting, '/context');
}

/**
 * A reader that may open nothing of the room: 403 M_FORBIDDEN everywhere, for every event —
 * but `/event`, which answers 404 M_NOT_FOUND for an event the reader may not see, as for
 * one that does not exist (the spec; sytest's "/event/ on non world readable room does not
 * work" and Complement's TestFetchEventNonWorldReadable expect 404).
 */
async function expectForbidden(setting: string, reader: TestUser, roomId: string, events: RoomEvent[]): Promise<void> {
  for (const dir of ['b', 'f']) expectError(await reader.req('GET', v3(`/rooms/${enc(roomId)}/messages?dir=${dir}`)), 403, 'M_FORBIDDEN');
  for (const e of events) {
    expectError(await reader.req('GET', v3(`/rooms/${enc(roomId)}/event/${enc(e.eventId)}`)), 404, 'M_NOT_FOUND');
    expectError(await reader.req('GET', v3(`/rooms/${enc(roomId)}/context/${enc(e.eventId)}`)), 403, 'M_FORBIDDEN');
    tally.eventsChecked += 2;
    tally.hiddenRefused += 2;
  }
  checked(setting, '/messages?dir=b');
  checked(setting, '/messages?dir=f');
  checked(setting, '/event');
  checked(setting, '/context');
}

const bodiesOf = (events: RoomEvent[]) => events.filter((e) => e.pdu.type === 'm.room.message').map((e) => e.pdu.content?.body as string);

// --- one room per setting ---------------------------------------------------------------------

interface Scenario {
  setting: Setting;
  roomId: string;
  bob: TestUser;
  /** bob's sync tokens from before the room existed and from just after it was created. */
  beforeRoom: string;
  afterCreate: string;
  /** alice's message of each phase. */
  message: Record<Phase, string>;
  /** What bob read through /messages while invited, and the room's events at that moment. */
  whileInvited: { events: RoomEvent[]; backwards: string[]; forwards: string[] };
  /** bob's initial sync while joined (a large and a small timeline), and the room's events at that moment. */
  joinedSync: any;
  joinedSyncSmall: any;
  atJoinedSync: RoomEvent[];
  /** bob's leave event. */
  leaveId: string;
  events: RoomEvent[];
}

async function buildScenario(setting: Setting): Promise<Scenario> {
  const bob = await user('bob');
  const beforeRoom = (await bob.sync()).next_batch as string;
  const { room_id: roomId } = await alice.createRoom({
    preset: 'private_chat',
    initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: setting } }],
  });
  const afterCreate = (await bob.sync()).next_batch as string;
  const say = (phase: Phase) => alice.send(roomId, `${setting}: ${phase}`);
  const message = {} as Record<Phase, string>;
  message['before invite'] = await say('before invite');
  // A state change in each phase bob may not see under some settings: it must still reach
  // his client as state.
  await alice.setState(roomId, 'm.room.name', { name: `${setting} room` });
  await alice.ok('POST', v3(`/rooms/${enc(roomId)}/invite`), { user_id: bob.userId });
  message['while invited'] = await say('while invited');
  await alice.setState(roomId, 'm.room.topic', { topic: `set while bob was invited to the ${setting} room` });
  const whileInvited = { events: await storedEvents(roomId), backwards: await paginate(bob, roomId, 'b'), forwards: await paginate(bob, roomId, 'f') };
  expect((await bob.join(roomId)).status).toBe(200);
  message['while joined'] = await say('while joined');
  // A read waits for every write acknowledged before it: this sync already holds the message.
  const joinedSync = await bob.sync({ filter: BIG_TIMELINE });
  const joinedSyncSmall = await bob.sync({ filter: JSON.stringify({ room: { timeline: { limit: 3 } } }) });
  const atJoinedSync = await storedEvents(roomId);
  expect(ids(atJoinedSync).at(-1)).toBe(message['while joined']);
  expect((await bob.leave(roomId)).status).toBe(200);
  message['after leave'] = await say('after leave');
  const events = await storedEvents(roomId);
  const leave = events.find((e) => e.pdu.type === 'm.room.member' && e.pdu.state_key === bob.userId && e.pdu.content?.membership === 'leave');
  return { setting, roomId, bob, beforeRoom, afterCreate, message, whileInvited, joinedSync, joinedSyncSmall, atJoinedSync, leaveId: leave!.eventId, events };
}

/** Which of alice's messages a reader may see, by the rule: the phases, in order. */
function phasesSeen(s: Scenario, visible: RoomEvent[]): Phase[] {
  const shown = new Set(ids(visible));
  return PHASES.filter((p) => shown.has(s.message[p]));
}

describe.each(SETTINGS)('history_visibility %s: alice writes before the invite, while bob is invited, joined, and after he left', (setting) => {
  let s: Scenario;
  let carol: TestUser;

  beforeAll(async () => {
    s = await buildScenario(setting);
    carol = await user('carol');
  });

  it('the rule gives bob the messages the specification names for this setting', () => {
    // A cross-check of the rule as computed here against the specification's summary
    // (MATRIX.md): joined — from the join on; invited — from the invite on; shared —
    // everything up to the leave; world_readable — everything.
    const expected: Record<Setting, Phase[]> = {
      joined: ['while joined'],
      invited: ['while invited', 'while joined'],
      shared: ['before invite', 'while invited', 'while joined'],
      world_readable: [...PHASES],
    };
    expect(phasesSeen(s, visibleTo(s.events, s.bob.userId))).toEqual(expected[setting]);
    // alice, joined from the start, sees all of it.
    expect(visibleTo(s.events, alice.userId)).toEqual(s.events);
  });

  it('alice reads the whole room through /messages', async () => {
    expect(await paginate(alice, s.roomId, 'f')).toEqual(ids(s.events));
  });

  it('bob, having left, reads exactly what the rule allows through /messages, /event and /context', async () => {
    const visible = visibleTo(s.events, s.bob.userId);
    await expectReads(setting, s.bob, s.roomId, s.events, visible);
    // His own view of alice's messages, by text.
    const bodies = bodiesOf(visible);
    expect(bodies).toEqual(phasesSeen(s, visible).map((p) => `${setting}: ${p}`));
  });

  it('bob, while only invited, read through /messages exactly what the rule allowed at that time', () => {
    const visible = visibleTo(s.whileInvited.events, s.bob.userId);
    expect(s.whileInvited.backwards).toEqual(ids(visible).reverse());
    expect(s.whileInvited.forwards).toEqual(ids(visible));
    // Under shared, what came before the invite opens only with the join.
    const expected: Record<Setting, Phase[]> = { joined: [], invited: ['while invited'], shared: [], world_readable: ['before invite', 'while invited'] };
    expect(phasesSeen(s, visible)).toEqual(expected[setting]);
  });

  it('bob’s initial sync while joined with a small timeline: the timeline and paging back from prev_batch give every visible event once', async () => {
    const visible = visibleTo(s.atJoinedSync, s.bob.userId);
    const section = s.joinedSyncSmall.rooms.join[s.roomId];
    expect(section.timeline.events.length).toBeLessThanOrEqual(3);
    expect(section.timeline.limited).toBe(true);
    const older = await paginate(s.bob, s.roomId, 'b', section.timeline.prev_batch);
    // Events after the sync (his leave, alice's last message) are not in this range.
    expect([...older.reverse(), ...eventIds(section.timeline.events)]).toEqual(ids(visible));
  });

  it('bob’s initial sync while joined: the timeline holds exactly the visible events, the state what came before them', async () => {
    const visible = visibleTo(s.atJoinedSync, s.bob.userId);
    expect(roomsIn(s.joinedSync, 'join')).toContain(s.roomId);
    const section = s.joinedSync.rooms.join[s.roomId];
    expect(eventIds(section.timeline.events)).toEqual(ids(visible));
    expect(section.timeline.limited).toBe(false);
    // What came before the first visible event arrives as state.
    expect(eventIds(section.state.events)).toEqual(expect.arrayContaining(stateBefore(s.atJoinedSync, visible[0]!.seq)));
    expect(bodiesOf(visible)).toEqual(
      phasesSeen(s, visible)
        .filter((p) => p !== 'after leave')
        .map((p) => `${setting}: ${p}`),
    );
    // Paging back from the timeline's start finds nothing more bob may see.
    expect(await paginate(s.bob, s.roomId, 'b', section.timeline.prev_batch)).toEqual([]);
    checked(setting, '/sync initial');
  });

  it('bob’s initial sync while joined: hidden state changes reach his client as state (state, then timeline, gives the room’s state)', () => {
    const section = s.joinedSync.rooms.join[s.roomId];
    expect(clientStateAfter(section)).toEqual(stateAfterTimeline(s.atJoinedSync, section));
  });

  it('bob’s incremental sync from before the room existed: the room under leave, its timeline the visible events up to his leave', async () => {
    const { body } = await s.bob.syncUntil(s.beforeRoom, (b) => s.roomId in b.rooms.leave, 10_000, { filter: BIG_TIMELINE });
    expect(roomsIn(body, 'join')).not.toContain(s.roomId);
    expect(roomsIn(body, 'invite')).not.toContain(s.roomId);
    const upToLeave = s.events.slice(0, s.events.findIndex((e) => e.eventId === s.leaveId) + 1);
    const visible = visibleTo(upToLeave, s.bob.userId);
    const section = body.rooms.leave[s.roomId];
    expect(eventIds(section.timeline.events)).toEqual(ids(visible));
    expect(eventIds(section.timeline.events).at(-1)).toBe(s.leaveId);
    expect(JSON.stringify(section)).not.toContain(`${setting}: after leave`);
    checked(setting, '/sync incremental');
  });

  it('bob’s incremental sync from before the room existed: hidden state changes reach his client as the leave entry’s state', async () => {
    const { body } = await s.bob.syncUntil(s.beforeRoom, (b) => s.roomId in b.rooms.leave, 10_000, { filter: BIG_TIMELINE });
    const section = body.rooms.leave[s.roomId];
    // Everything here was sent after `since`: state then timeline is the room's state at the leave.
    expect(clientStateAfter(section)).toEqual(stateAfterTimeline(s.events, section));
  });

  it('bob’s incremental sync from just after the room was created: hidden state changes since then reach his client as the leave entry’s state', async () => {
    const { body } = await s.bob.syncUntil(s.afterCreate, (b) => s.roomId in b.rooms.leave, 10_000, { filter: BIG_TIMELINE });
    const section = body.rooms.leave[s.roomId];
    // createRoom answered before that sync: what came after it starts with alice's first message.
    const window = s.events.slice(
      s.events.findIndex((e) => e.eventId === s.message['before invite']),
      s.events.findIndex((e) => e.eventId === s.leaveId) + 1,
    );
    expect(eventIds(section.timeline.events)).toEqual(ids(visibleTo(s.events, s.bob.userId).filter((e) => window.includes(e))));
    const changed = new Set(window.filter((e) => e.pdu.state_key !== undefined).map((e) => `${e.pdu.type}|${e.pdu.state_key}`));
    const only = (state: Record<string, string>) => Object.fromEntries(Object.entries(state).filter(([k]) => changed.has(k)));
    expect(only(clientStateAfter(section))).toEqual(only(stateAfterTimeline(s.events, section)));
  });

  it('bob’s incremental sync from his joined sync: under leave, only his leave event', async () => {
    const { body } = await s.bob.syncUntil(s.joinedSync.next_batch, (b) => s.roomId in b.rooms.leave, 10_000, { filter: BIG_TIMELINE });
    const joinedAt = s.events.find((e) => e.eventId === s.message['while joined'])!.seq;
    const leaveAt = s.events.find((e) => e.eventId === s.leaveId)!.seq;
    const expected = visibleTo(s.events, s.bob.userId).filter((e) => e.seq > joinedAt && e.seq <= leaveAt);
    expect(ids(expected)).toEqual([s.leaveId]);
    expect(eventIds(body.rooms.leave[s.roomId].timeline.events)).toEqual(ids(expected));
  });

  it(setting === 'world_readable' ? 'carol, never a member, reads everything from the world_readable point on' : 'carol, never a member, is refused with 403 M_FORBIDDEN', async () => {
    const visible = visibleTo(s.events, carol.userId);
    if (setting !== 'world_readable') {
      expect(visible).toEqual([]);
      await expectForbidden(setting, carol, s.roomId, s.events);
      return;
    }
    const opened = s.events.findIndex((e) => e.pdu.type === 'm.room.history_visibility' && e.pdu.content?.history_visibility === 'world_readable');
    expect(ids(visible)).toEqual(ids(s.events.slice(opened)));
    expect(bodiesOf(visible)).toEqual(PHASES.map((p) => `${setting}: ${p}`));
    await expectReads(setting, carol, s.roomId, s.events, visible);
  });

  it(setting === 'world_readable' ? 'carol peeks: her sync shows the room from the world_readable point on, new messages after' : 'carol cannot peek', async () => {
    const p = await carol.peek(s.roomId);
    if (setting !== 'world_readable') {
      expectError(p, 403, 'M_FORBIDDEN');
      return;
    }
    expect(p.status).toBe(200);
    const first = await carol.syncUntil(undefined, (b) => s.roomId in b.rooms.peek, 10_000, { filter: BIG_TIMELINE });
    const section = first.body.rooms.peek[s.roomId];
    expect(eventIds(section.timeline.events)).toEqual(ids(peekTimeline(s.events, carol.userId)));
    // What the client holds after state + timeline is the room's state (hidden changes included).
    expect(clientStateAfter(section)).toEqual(stateAfterTimeline(s.events, section));
    checked(setting, '/sync initial');
    const later = await alice.send(s.roomId, `${setting}: while carol peeks`);
    const next = await carol.syncUntil(first.body.next_batch, (b) => s.roomId in b.rooms.peek, 10_000, { filter: BIG_TIMELINE });
    expect(eventIds(next.body.rooms.peek[s.roomId].timeline.events)).toEqual([later]);
    checked(setting, '/sync incremental');
  });
});

// --- a change of setting mid-history -----------------------------------------------------------

describe('joined, then world_readable, then shared again', () => {
  it('a peeking stranger sees exactly the world_readable window; a user only ever invited reads the same window after it closed', async () => {
    const { room_id: roomId } = await alice.createRoom({
      preset: 'private_chat',
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }],
    });
    const carol = await user('carol');
    const dave = await user('dave');
    await alice.ok('POST', v3(`/rooms/${enc(roomId)}/invite`), { user_id: dave.userId });
    await alice.send(roomId, 'joined era');
    // Not world_readable yet: carol may neither read nor peek.
    expectError(await carol.peek(roomId), 403, 'M_FORBIDDEN');
    expectError(await carol.req('GET', v3(`/rooms/${enc(roomId)}/messages?dir=b`)), 403, 'M_FORBIDDEN');

    const open = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'world_readable' });
    await alice.send(roomId, 'public 1');
    expect((await carol.peek(roomId)).status).toBe(200);
    const c0 = await carol.syncUntil(undefined, (b) => roomId in b.rooms.peek, 10_000, { filter: BIG_TIMELINE });
    const whileOpen = await storedEvents(roomId);
    const windowSoFar = visibleTo(whileOpen, carol.userId);
    expect(ids(windowSoFar)).toEqual(ids(whileOpen.slice(whileOpen.findIndex((e) => e.eventId === open))));
    expect(eventIds(c0.body.rooms.peek[roomId].timeline.events)).toEqual(ids(peekTimeline(whileOpen, carol.userId)));
    await expectReads('joined→world_readable→shared', carol, roomId, whileOpen, windowSoFar);

    const public2 = await alice.send(roomId, 'public 2');
    const c1 = await carol.syncUntil(c0.body.next_batch, (b) => roomId in b.rooms.peek, 10_000, { filter: BIG_TIMELINE });
    expect(eventIds(c1.body.rooms.peek[roomId].timeline.events)).toEqual([public2]);
    checked('joined→world_readable→shared', '/sync initial');
    checked('joined→world_readable→shared', '/sync incremental');

    const close = await alice.setState(roomId, 'm.room.history_visibility', { history_visibility: 'shared' });
    await alice.send(roomId, 'shared era');
    expect((await dave.leave(roomId)).status).toBe(200); // rejects the invite: never joined
    const events = await storedEvents(roomId);
    const window = events.slice(
      events.findIndex((e) => e.eventId === open),
      events.findIndex((e) => e.eventId === close) + 1,
    );
    expect(bodiesOf(window)).toEqual(['public 1', 'public 2']);

    // carol's peek ends with the event that closed the window: her syncs delivered exactly it,
    // after her first sync's state events from before it (none of its messages).
    const c2 = await carol.syncUntil(c1.body.next_batch, (b) => roomId in b.rooms.leave, 10_000, { filter: BIG_TIMELINE });
    const delivered = [c0.body, c1.body, ...c2.seen].flatMap((b) => [...(b.rooms.peek[roomId]?.timeline.events ?? []), ...(b.rooms.leave[roomId]?.timeline?.events ?? [])]);
    const firstSync = ids(peekTimeline(whileOpen, carol.userId));
    expect(eventIds(delivered)).toEqual([...firstSync, ...ids(window).filter((id) => !firstSync.includes(id))]);
    expect(ids(visibleTo(events, carol.userId))).toEqual(ids(window));
    // The room is no longer world_readable and carol never had a membership: 403 now.
    await expectForbidden('joined→world_readable→shared', carol, roomId, events);

    // dave was invited under joined and rejected under shared: he may open the room, and
    // what he may see is the same window.
    const daveSees = visibleTo(events, dave.userId);
    expect(ids(daveSees)).toEqual(ids(window));
    await expectReads('joined→world_readable→shared', dave, roomId, events, daveSees);
  });
});

// --- devices trying to end each other's peeks ------------------------------------------------

describe('a peek belongs to its device', () => {
  it('another device of the same user, or another user, cannot end it: 400 M_BAD_STATE, the peek goes on, the audit is unchanged', async () => {
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const phone = await user('bob');
    const laptop = await phone.login();
    const mallory = await user('mallory');
    expect((await phone.peek(roomId)).status).toBe(200);
    const p0 = await phone.sync();
    expect(roomsIn(p0, 'peek')).toEqual([roomId]);
    const started = await auditUntil(url, ADMIN, { room_id: roomId }, (es) => es.length >= 1);
    expect(started.map((e) => [e.event, e.user_id, e.device_id])).toEqual([['PeekStarted', phone.userId, phone.deviceId]]);

    for (const attacker of [laptop, mallory]) {
      for (const prefix of ['/_matrix/client/v3', '/_matrix/client/r0', '/_matrix/client/unstable/org.matrix.msc2753']) {
        const r = await request(url, 'POST', `${prefix}/rooms/${enc(roomId)}/unpeek`, { token: attacker.token, body: {} });
        expectError(r, 400, 'M_BAD_STATE');
      }
    }
    // mallory's own peek and unpeek touch only mallory's device.
    expect((await mallory.peek(roomId)).status).toBe(200);
    expect((await mallory.unpeek(roomId)).status).toBe(200);

    const id = await alice.send(roomId, 'still peeking');
    const p1 = await phone.syncUntil(p0.next_batch, (b) => roomId in b.rooms.peek);
    expect(eventIds(p1.body.rooms.peek[roomId].timeline.events)).toEqual([id]);
    expect(p1.seen.flatMap((b) => roomsIn(b, 'leave'))).toEqual([]);
    const l = await laptop.sync();
    expect(roomsIn(l, 'peek')).toEqual([]);
    expect(roomsIn(l, 'leave')).toEqual([]);

    // The phone ends its own peek; everything the audit holds for the phone before that
    // entry is the one start: nothing the others did ended or renewed it.
    expect((await phone.unpeek(roomId)).status).toBe(200);
    const all = await auditUntil(url, ADMIN, { room_id: roomId, user_id: phone.userId }, (es) => es.some((e) => e.event === 'PeekExpired'));
    expect(all.map((e) => [e.event, e.device_id, e.reason])).toEqual([
      ['PeekStarted', phone.deviceId, undefined],
      ['PeekExpired', phone.deviceId, 'unpeeked'],
    ]);
    const mallorys = await auditUntil(url, ADMIN, { room_id: roomId, user_id: mallory.userId }, (es) => es.length >= 2);
    expect(mallorys.map((e) => [e.event, e.reason])).toEqual([
      ['PeekStarted', undefined],
      ['PeekExpired', 'unpeeked'],
    ]);
  });
});
