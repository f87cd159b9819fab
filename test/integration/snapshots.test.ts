// Room actor snapshots against a real log and KV bucket. A room with a long history
// (about 2,000 events on its two subjects, snapshots every 100): an actor activated from
// the snapshot plus the tail has exactly the state of one activated from the whole history,
// and reads a fraction of the messages. Snapshots are derived data: with the snapshot
// deleted (a second log, a copy of the first) the same commands have the same outcome,
// and a stale, foreign or corrupt snapshot is ignored.
import { Kvm } from '@nats-io/kv';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RoomCommand } from '../../src/actors/commands.ts';
import { DomainError } from '../../src/actors/errors.ts';
import { evolve } from '../../src/actors/evolve.ts';
import { RoomActor, type ActorDeps, type CommandResult } from '../../src/actors/roomActor.ts';
import { KvSnapshotStore, serializeState } from '../../src/actors/snapshots.ts';
import { initialState, recordCommand, type RoomState } from '../../src/actors/state.ts';
import { generateSigningKey } from '../../src/crypto/index.ts';
import { storedEvents } from '../../src/events/envelope.ts';
import { decodePeekEnvelope } from '../../src/events/peekEvents.ts';
import { decodeRoomEnvelope } from '../../src/events/roomEvents.ts';
import { roomToken } from '../../src/events/subjects.ts';
import { SigningPduFactory } from '../../src/matrix/pduFactory.ts';
import { EventLog } from '../../src/nats/eventLog.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { createTestStreams, type TestStreams } from '../helpers/services.ts';
import { createRoomCommand, HOUR, ManualClock, T0 } from '../helpers/peekLog.ts';

const SERVER = 'snap.example';
const OWNER = `@owner:${SERVER}`;
const ROOM = `!long.history:${SERVER}`;
const INTERVAL = 100;
const KEY = generateSigningKey();

/** One deployment: streams, the event log, and the snapshot bucket. */
interface World {
  streams: TestStreams;
  log: EventLog;
  store: KvSnapshotStore;
}

async function openWorld(): Promise<World> {
  const streams = await createTestStreams(8);
  return { streams, log: await EventLog.open(streams.nc, streams.naming), store: await KvSnapshotStore.open(streams.nc, streams.naming) };
}

/** The log, with a count of the messages the actor reads from it. */
function countingLog(log: EventLog): { log: EventLog; read: () => number } {
  let read = 0;
  const wrapped = new Proxy(log, {
    get(target, prop) {
      if (prop === 'read') {
        return async (...args: Parameters<EventLog['read']>) => {
          const records = await target.read(...args);
          read += records.length;
          return records;
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { log: wrapped, read: () => read };
}

function actorOn(log: EventLog, clock: ManualClock, snapshots?: KvSnapshotStore, roomId = ROOM): RoomActor {
  const deps: ActorDeps = {
    log,
    clock,
    pduFactory: new SigningPduFactory(SERVER, KEY),
    settings: { serverName: SERVER, peekLifetimeMs: HOUR, inboundRenewalIntervalMs: HOUR, maxConflictRetries: 4, snapshotInterval: INTERVAL },
    ...(snapshots ? { snapshots } : {}),
  };
  return new RoomActor(roomId, deps);
}

/** The state as plain data (Maps as entry lists), comparable with toEqual. */
const plain = (state: RoomState): unknown => JSON.parse(serializeState(state));

/** The room folded from the whole log with `evolve`, independently of the actor's reload. */
async function foldLog(log: EventLog, roomId = ROOM): Promise<{ state: RoomState; messages: number; events: number }> {
  const rooms = await log.read('rooms', roomId);
  const peeks = await log.read('peeks', roomId);
  let state = initialState(roomId);
  let count = 0;
  for (const r of rooms) {
    const { commandId, events } = decodeRoomEnvelope(r.data);
    for (const e of storedEvents(r.seq, events)) state = evolve(state, { stream: 'rooms', ...e });
    count += events.filter(Boolean).length;
    state = { ...state, roomsSeq: r.seq, commands: recordCommand(state.commands, commandId, 'rooms', r.seq) };
  }
  for (const p of peeks) {
    const { commandId, events } = decodePeekEnvelope(p.data);
    for (const e of storedEvents(p.seq, events)) state = evolve(state, { stream: 'peeks', ...e });
    count += events.filter(Boolean).length;
    state = { ...state, peeksSeq: p.seq, commands: recordCommand(state.commands, commandId, 'peeks', p.seq) };
  }
  return { state, messages: rooms.length + peeks.length, events: count };
}

const member = (userId: string, membership: string): RoomCommand => ({
  type: 'SendEvents',
  roomId: ROOM,
  events: [{ type: 'm.room.member', sender: userId, state_key: userId, content: { membership } }],
});

/**
 * A long, varied history: messages (with transaction IDs), device peeks started, renewed
 * and stopped, users joining (ending their peeks) and leaving, inbound peeks started and
 * renewed. Deterministic for a given clock.
 */
async function buildHistory(actor: RoomActor, clock: ManualClock): Promise<void> {
  let n = 0;
  // A refused command (a joined user's peek, a leave of someone not joined) is part of the
  // history too: it appends nothing, the same way every time.
  const run = async (command: RoomCommand) => {
    clock.t += 1000;
    await actor.handle(command, `build-${n++}`).catch((err: unknown) => {
      if (!(err instanceof DomainError)) throw err;
    });
  };
  await run(createRoomCommand(ROOM, OWNER));
  for (let i = 0; i < 260; i++) {
    const user = `@u${i % 37}:${SERVER}`;
    if (i % 2 === 0) {
      const events = Array.from({ length: 14 }, (_, k) => ({ type: 'm.room.message', sender: OWNER, content: { msgtype: 'm.text', body: `m${i}.${k}` } }));
      await run({ type: 'SendEvents', roomId: ROOM, events, txn: { deviceId: 'OWNERDEV', txnId: `txn${i}` } });
      await run({ type: 'StartDevicePeek', roomId: ROOM, userId: `@v${i % 23}:${SERVER}`, deviceId: 'TAB' }); // started or renewed
    } else if (i % 10 === 1 || i % 10 === 5) {
      await run({ type: 'StartDevicePeek', roomId: ROOM, userId: user, deviceId: 'PHONE' });
      await run({ type: 'StartDevicePeek', roomId: ROOM, userId: `@v${i % 23}:${SERVER}`, deviceId: 'TAB' });
    } else if (i % 10 === 3) {
      await run(member(user, 'join')); // ends the user's peek, if any
    } else if (i % 10 === 7) {
      await run({ type: 'StartInboundPeek', roomId: ROOM, server: `s${i % 7}.example`, peekId: 'p1', roomVersions: ['10'] });
      await run({ type: 'StopDevicePeek', roomId: ROOM, userId: `@v${(i + 11) % 23}:${SERVER}`, deviceId: 'TAB', reason: 'unpeeked' });
    } else {
      await run(member(`@u${(i + 19) % 37}:${SERVER}`, 'leave'));
    }
  }
}

/** What a command did, comparable across two logs: its events (with sequences) or its error. */
async function outcome(p: Promise<CommandResult>): Promise<unknown> {
  try {
    const r = await p;
    return {
      peekEvents: r.peekEvents,
      roomEvents: r.roomEvents.map((e) => ({ seq: e.seq, eventId: e.event.eventId, pdu: e.event.pdu })),
      existingEventId: r.existingEventId,
    };
  } catch (err) {
    return { error: (err as Error).name, message: (err as Error).message };
  }
}

describe('room actor snapshots', () => {
  let x: World;
  let y: World;
  let full: { state: RoomState; messages: number; events: number };
  const clockX = new ManualClock(T0);

  beforeAll(async () => {
    x = await openWorld();
    const builder = actorOn(x.log, clockX, x.store);
    await builder.activate();
    await buildHistory(builder, clockX);
    await builder.flushSnapshot();
    full = await foldLog(x.log);
    expect(plain(builder.current)).toEqual(plain(full.state));

    // World Y: the same log, message for message and sequence for sequence.
    y = await openWorld();
    for (const kind of ['rooms', 'peeks'] as const) {
      const records = await x.log.read(kind, ROOM);
      let expected = 0;
      for (const [i, r] of records.entries()) {
        const { seq } = await y.log.append(kind, ROOM, r.data, expected, `copy-${kind}-${i}`);
        expect(seq).toBe(r.seq);
        expected = seq;
      }
    }
  });

  afterAll(async () => {
    await x?.streams.cleanup();
    await y?.streams.cleanup();
  });

  it('builds a long history of both kinds of events', () => {
    expect(full.events).toBeGreaterThanOrEqual(2000);
    const room = full.state.room!;
    expect(room.eventCount).toBeGreaterThan(1500);
    expect(full.state.peeksSeq).toBeGreaterThan(250);
    expect(room.txns.size).toBe(130);
    expect([...room.state.keys()].filter((k) => k.startsWith('m.room.member')).length).toBeGreaterThan(20);
    const kinds = new Set([...full.state.peeks.values()].map((p) => p.peek.kind));
    expect(kinds).toEqual(new Set(['device', 'inbound']));
  });

  it('activates from the snapshot plus the tail into exactly the state of the whole history, reading far less', async () => {
    const snapshot = await x.store.load(ROOM);
    expect(snapshot).not.toBeNull();
    // The snapshot is a point inside the history, not its end…
    expect(snapshot!.roomsSeq + snapshot!.peeksSeq).toBeGreaterThan(full.messages - 2 * INTERVAL);
    // (This log holds one room, so its sequences count its messages.)
    const tail = full.messages - snapshot!.roomsSeq - snapshot!.peeksSeq;
    expect(tail).toBeGreaterThan(0);

    const a = countingLog(x.log);
    const fromSnapshot = actorOn(a.log, new ManualClock(clockX.t), x.store);
    await fromSnapshot.activate();
    const b = countingLog(x.log);
    const fromHistory = actorOn(b.log, new ManualClock(clockX.t)); // no snapshot store
    await fromHistory.activate();

    expect(plain(fromSnapshot.current)).toEqual(plain(fromHistory.current));
    expect(plain(fromSnapshot.current)).toEqual(plain(full.state));
    expect(b.read()).toBe(full.messages);
    // …and activation reads exactly the tail after it.
    expect(a.read()).toBe(tail);
    expect(a.read()).toBeLessThan(2 * INTERVAL);
    expect(a.read() * 10).toBeLessThan(b.read());
  });

  it('with the snapshot deleted, the same commands have the same outcome', async () => {
    // Y had the same snapshot, then lost it.
    const saved = await x.store.load(ROOM);
    await y.store.save(saved!);
    expect(await y.store.load(ROOM)).not.toBeNull();
    await y.store.delete(ROOM);
    expect(await y.store.load(ROOM)).toBeNull();

    const clockA = new ManualClock(clockX.t);
    const clockB = new ManualClock(clockX.t);
    const a = countingLog(x.log);
    const b = countingLog(y.log);
    const withSnapshot = actorOn(a.log, clockA, x.store);
    const without = actorOn(b.log, clockB, y.store);
    await withSnapshot.activate();
    await without.activate();
    expect(b.read()).toBe(full.messages);
    expect(a.read()).toBeLessThan(2 * INTERVAL);

    const live = [...full.state.peeks.values()].map((p) => p.peek);
    const device = live.find((p) => p.kind === 'device')!;
    const inbound = live.find((p) => p.kind === 'inbound')!;
    expect(device.kind === 'device' && inbound.kind === 'inbound').toBe(true);
    const joined = [...full.state.room!.state.values()].find((e) => e.pdu.type === 'm.room.member' && e.pdu.content.membership === 'join' && e.pdu.sender !== OWNER)!.pdu.sender;
    const commands: [number, RoomCommand][] = [
      // An early transaction again: answered from the snapshot's txns, nothing appended.
      [1000, { type: 'SendEvents', roomId: ROOM, events: [{ type: 'm.room.message', sender: OWNER, content: { body: 'again' } }], txn: { deviceId: 'OWNERDEV', txnId: 'txn2' } }],
      [1000, { type: 'SendEvents', roomId: ROOM, events: [{ type: 'm.room.message', sender: OWNER, content: { body: 'new' } }], txn: { deviceId: 'OWNERDEV', txnId: 'new1' } }],
      [1000, device.kind === 'device' ? { type: 'StartDevicePeek', roomId: ROOM, userId: device.userId, deviceId: device.deviceId } : { type: 'Tick', roomId: ROOM }],
      [1000, { type: 'StartDevicePeek', roomId: ROOM, userId: joined, deviceId: 'PHONE' }],
      [1000, inbound.kind === 'inbound' ? { type: 'RenewInboundPeek', roomId: ROOM, server: inbound.server, peekId: inbound.peekId } : { type: 'Tick', roomId: ROOM }],
      [1000, { type: 'DeleteInboundPeek', roomId: ROOM, server: 'never.example', peekId: 'p1' }],
      [1000, { type: 'StopDevicePeek', roomId: ROOM, userId: '@nobody:snap.example', deviceId: 'X', reason: 'unpeeked' }],
      [1000, member(`@late:${SERVER}`, 'join')],
      [1000, { type: 'StartDevicePeek', roomId: ROOM, userId: `@fresh:${SERVER}`, deviceId: 'NEW' }],
      // Two hours on: every peek not renewed since has run out.
      [2 * HOUR, { type: 'Tick', roomId: ROOM }],
      [1000, { type: 'StartDevicePeek', roomId: ROOM, userId: `@fresh:${SERVER}`, deviceId: 'NEW' }],
      [1000, { type: 'SendEvents', roomId: ROOM, events: [{ type: 'm.room.history_visibility', sender: OWNER, state_key: '', content: { history_visibility: 'shared' } }] }],
      [1000, { type: 'StartDevicePeek', roomId: ROOM, userId: `@fresh:${SERVER}`, deviceId: 'OTHER' }],
    ];
    const outcomes: unknown[][] = [[], []];
    for (const [i, [advance, command]] of commands.entries()) {
      clockA.t += advance;
      clockB.t += advance;
      outcomes[0]!.push(await outcome(withSnapshot.handle(command, `after-${i}`)));
      outcomes[1]!.push(await outcome(without.handle(command, `after-${i}`)));
    }
    expect(outcomes[0]).toEqual(outcomes[1]);
    // The commands did things worth comparing: an idempotent answer, new events, refusals, expiries.
    const o = outcomes[0] as { peekEvents?: { event: { type: string; reason?: string } }[]; roomEvents?: unknown[]; existingEventId?: string; error?: string }[];
    expect(o[0]!.existingEventId).toMatch(/^\$/);
    expect(o[1]!.roomEvents).toHaveLength(1);
    expect(o[3]!.error).toBe('BadStateError');
    expect(o[5]!.error).toBe('NotFoundError');
    expect(o[9]!.peekEvents!.length).toBeGreaterThan(5);
    expect(o[9]!.peekEvents!.every((e) => e.event.type === 'PeekExpired' && e.event.reason === 'timed_out')).toBe(true);
    expect(o[11]!.peekEvents!.map((e) => e.event.reason)).toEqual(['visibility_changed']);
    expect(o[12]!.error).toBe('ForbiddenError');
    expect(plain(withSnapshot.current)).toEqual(plain(without.current));

    // Either log, activated afresh from its whole history, agrees.
    await withSnapshot.flushSnapshot();
    await x.store.delete(ROOM);
    const again = actorOn(x.log, new ManualClock(clockA.t));
    await again.activate();
    expect(plain(again.current)).toEqual(plain(withSnapshot.current));
    expect(plain((await foldLog(y.log)).state)).toEqual(plain(without.current));
  });

  it('ignores a snapshot that is stale, of another room, or corrupt', async () => {
    const { state } = await foldLog(y.log);
    const kv = await new Kvm(y.streams.nc).open(y.streams.naming.kvBucket('snapshots'));
    const cases: [string, () => Promise<unknown>][] = [
      // From a log that was longer (streams recreated since): worthless.
      ['stale', () => y.store.save({ ...state, peeksSeq: state.peeksSeq + 1000, peeks: new Map() })],
      ['another room', () => kv.put(roomToken(ROOM), serializeState({ ...initialState('!other:snap.example'), peeksSeq: 1 }))],
      ['corrupt', () => kv.put(roomToken(ROOM), 'not json {')],
      ['corrupt gzip', () => kv.put(roomToken(ROOM), new Uint8Array([0x1f, 0x8b, 8, 0, 1, 2, 3]))],
      ['a newer format', () => kv.put(roomToken(ROOM), JSON.stringify({ v: 3, roomId: ROOM }))],
      ['a format from before envelopes', () => kv.put(roomToken(ROOM), JSON.stringify({ ...JSON.parse(serializeState(state)), v: 1 }))],
    ];
    for (const [label, put] of cases) {
      await put();
      const counted = countingLog(y.log);
      const actor = actorOn(counted.log, new ManualClock(T0 + 10 * HOUR), y.store);
      await actor.activate();
      expect(plain(actor.current), label).toEqual(plain(state));
      expect(counted.read(), label).toBe((await y.log.read('rooms', ROOM)).length + (await y.log.read('peeks', ROOM)).length);
      await actor.flushSnapshot(); // a full read saves a good snapshot again; the next case overwrites it
    }
  });
  it('still reads a snapshot saved as plain JSON (before snapshots were compressed)', async () => {
    const { state, events } = await foldLog(y.log);
    const kv = await new Kvm(y.streams.nc).open(y.streams.naming.kvBucket('snapshots'));
    await kv.put(roomToken(ROOM), serializeState(state));
    const counted = countingLog(y.log);
    const actor = actorOn(counted.log, new ManualClock(T0 + 10 * HOUR), y.store);
    await actor.activate();
    expect(plain(actor.current)).toEqual(plain(state));
    expect(events).toBeGreaterThan(2000);
    expect(counted.read()).toBe(0); // the snapshot is the whole history: no tail
  });

  it('snapshots a room whose state is larger than one NATS message', async () => {
    // 1,500 members: the state's JSON alone is more than the server's max_payload.
    const roomId = `!crowded:${SERVER}`;
    const clock = new ManualClock(T0);
    const builder = actorOn(x.log, clock, x.store, roomId);
    await builder.activate();
    await builder.handle(createRoomCommand(roomId, OWNER), 'crowd-create');
    for (let i = 0; i < 1500; i += 50) {
      clock.t += 1000;
      const joins = Array.from({ length: 50 }, (_, k) => {
        const userId = `@crowd${i + k}:${SERVER}`;
        return { type: 'm.room.member', sender: userId, state_key: userId, content: { membership: 'join' } };
      });
      await builder.handle({ type: 'SendEvents', roomId, events: joins }, `crowd-${i}`);
    }
    await builder.flushSnapshot();
    const { state, messages } = await foldLog(x.log, roomId);
    expect(serializeState(state).length).toBeGreaterThan(x.streams.nc.info!.max_payload);

    const snapshot = await x.store.load(roomId);
    expect(snapshot).not.toBeNull();
    expect(snapshot!.room!.state.size).toBeGreaterThan(1400);
    const counted = countingLog(x.log);
    const actor = actorOn(counted.log, new ManualClock(clock.t), x.store, roomId);
    await actor.activate();
    expect(plain(actor.current)).toEqual(plain(state));
    expect(counted.read()).toBeLessThan(2 * INTERVAL);
    expect(counted.read() * 5).toBeLessThan(messages);
  });
});

describe('PEEKD_SNAPSHOT_INTERVAL on a running peekd', () => {
  it('saves a room snapshot every that many events, and none at 0', async () => {
    const on = await startTestPeekd({ env: { PEEKD_SNAPSHOT_INTERVAL: '25' } });
    const off = await startTestPeekd({ env: { PEEKD_SNAPSHOT_INTERVAL: '0' } });
    try {
      const roomOf = (t: typeof on) => `!snapshotted:${t.serverName}`;
      for (const t of [on, off]) {
        const roomId = roomOf(t);
        const owner = `@owner:${t.serverName}`;
        await t.peekd.bus.send(createRoomCommand(roomId, owner));
        for (let i = 0; i < 6; i++) {
          const events = Array.from({ length: 10 }, (_, k) => ({ type: 'm.room.message', sender: owner, content: { body: `${i}.${k}` } }));
          await t.peekd.bus.send({ type: 'SendEvents', roomId, events });
        }
      }
      // 65 events in commands of 5 and 10: snapshots after 25 and 55 (saved in the background).
      const store = await KvSnapshotStore.open(on.peekd.nc, on.peekd.naming);
      const snapshot = await vi.waitFor(
        async () => {
          const s = await store.load(roomOf(on));
          if (!s || s.room!.eventCount < 45) throw new Error('no snapshot at 50 yet');
          return s;
        },
        { timeout: 30_000, interval: 50 },
      );
      expect(snapshot.room!.eventCount).toBeLessThanOrEqual(65);
      const jsm = await jetstreamManager(off.peekd.nc);
      await expect(jsm.streams.info(`KV_${off.peekd.naming.kvBucket('snapshots')}`)).rejects.toThrow(/not found/);
    } finally {
      await on.dropAll();
      await off.dropAll();
    }
  });
});
