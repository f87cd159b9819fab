// The room-subject event log on a real JetStream: one message (envelope) per append with
// the expected last subject sequence, Nats-Msg-Id dedupe per command, reads, exact gets,
// stream creation and prefix isolation.
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Naming, roomToken } from '../../src/events/subjects.ts';
import { DUPLICATE_WINDOW_MS, messageId, shardsFromDescription } from '../../src/events/streams.ts';
import { encodeEnvelope, position, storedEvents } from '../../src/events/envelope.ts';
import { decodePeekEnvelope, encodePeekEvent, type PeekExpired, type PeekStarted } from '../../src/events/peekEvents.ts';
import { ConcurrencyError, ShardCountMismatchError } from '../../src/nats/errors.ts';
import { EventLog, type LogRecord } from '../../src/nats/eventLog.ts';
import { deleteStreams, ensureStreams } from '../../src/nats/streams.ts';
import { createTestStreams, uniqueName, type TestStreams } from '../helpers/services.ts';
import { until } from '../helpers/until.ts';

const bytes = (s: string): Uint8Array => Buffer.from(s, 'utf8');
const text = (r: LogRecord): string => Buffer.from(r.data).toString('utf8');
/** A room ID no other test in this file uses. */
const freshRoom = (label: string): string => `!${uniqueName(label)}:example.org`;

describe('EventLog', () => {
  let streams: TestStreams;
  let log: EventLog;

  beforeAll(async () => {
    streams = await createTestStreams(8);
    log = await EventLog.open(streams.nc, streams.naming);
  });

  afterAll(async () => {
    await streams?.cleanup();
  });

  it('reads back exactly the appended payloads with the sequences append returned', async () => {
    const room = freshRoom('read');
    const first = await log.append('peeks', room, bytes('a'), 0, 'cmd-read-1');
    expect(first.duplicate).toBe(false);
    expect(first.seq).toBeGreaterThan(0);
    const second = await log.append('peeks', room, bytes('b'), first.seq, 'cmd-read-2');
    expect(second).toEqual({ seq: first.seq + 1, duplicate: false });
    const third = await log.append('peeks', room, bytes('c'), second.seq, 'cmd-read-3');
    expect(third).toEqual({ seq: second.seq + 1, duplicate: false });

    const all = await log.read('peeks', room);
    expect(all.map((r) => r.seq)).toEqual([first.seq, second.seq, third.seq]);
    expect(all.map(text)).toEqual(['a', 'b', 'c']);
    expect(await log.lastSeq('peeks', room)).toBe(third.seq);

    // From a sequence in the middle, and past the end.
    const tail = await log.read('peeks', room, second.seq);
    expect(tail.map((r) => [r.seq, text(r)])).toEqual([
      [second.seq, 'b'],
      [third.seq, 'c'],
    ]);
    expect(await log.read('peeks', room, third.seq + 1)).toEqual([]);
    // The other stream's subject of the same room is untouched.
    expect(await log.read('rooms', room)).toEqual([]);
  });

  it('leaves no consumer behind after reading a room (a host taking over many rooms reads each once)', async () => {
    const jsm = await jetstreamManager(streams.nc);
    const stream = streams.naming.streamName('peeks');
    const consumers = async () => (await jsm.streams.info(stream)).state.consumer_count;
    const before = await consumers();
    const rooms = Array.from({ length: 5 }, () => freshRoom('leftover'));
    for (const room of rooms) await log.append('peeks', room, bytes('x'), 0, `cmd-${room}`);
    for (const room of rooms) expect(await log.read('peeks', room)).toHaveLength(1);
    // The deletes run in the background: wait until the server has them all.
    await until('every read consumer deleted', async () => (await consumers()) <= before);
    expect(await consumers()).toBe(before);
  });

  it('gets the exact message at a stream sequence, and null where there is none', async () => {
    const room = freshRoom('get');
    const a = await log.append('peeks', room, bytes('get-a'), 0, 'cmd-get-a');
    const other = await log.append('peeks', freshRoom('get-other'), bytes('get-other'), 0, 'cmd-get-other');
    const b = await log.append('peeks', room, bytes('get-b'), a.seq, 'cmd-get-b');

    const gotA = await log.get('peeks', a.seq);
    expect(gotA).not.toBeNull();
    expect(gotA!.seq).toBe(a.seq);
    expect(text(gotA!)).toBe('get-a');
    // By stream sequence, whatever the room.
    expect(text((await log.get('peeks', other.seq))!)).toBe('get-other');
    expect(await log.get('peeks', b.seq).then((r) => r && [r.seq, text(r)])).toEqual([b.seq, 'get-b']);
    // The same bytes as read returns.
    expect((await log.read('peeks', room)).map((r) => [r.seq, text(r)])).toEqual([
      [a.seq, 'get-a'],
      [b.seq, 'get-b'],
    ]);

    // Past the end of the stream: nothing (not the next or the last message).
    const last = await log.lastSeq('peeks', room);
    expect(await log.get('peeks', last + 1)).toBeNull();
    expect(await log.get('peeks', last + 1000)).toBeNull();
    // The ROOMS stream numbers its own messages: none there yet at these sequences.
    expect(await log.get('rooms', a.seq)).toBeNull();
    expect(await log.get('rooms', b.seq)).toBeNull();

    // The message carries the command's Nats-Msg-Id for its stream kind.
    const jsm = await jetstreamManager(streams.nc);
    const msg = await jsm.direct.getMessage(streams.naming.streamName('peeks'), { seq: a.seq });
    expect(msg?.header.get('Nats-Msg-Id')).toBe(messageId('peeks', 'cmd-get-a'));
  });

  it('stores a multi-event envelope as ONE message that decodes back to its events and command ID', async () => {
    const room = freshRoom('multi');
    const peek = { kind: 'device', userId: '@alice:example.org', deviceId: 'DEVA' } as const;
    const other = { kind: 'inbound', server: 'remote.example.org', peekId: 'p1' } as const;
    const started: PeekStarted = { type: 'PeekStarted', v: 1, roomId: room, peek, at: 1_000, expiresAt: 61_000, renewalIntervalMs: 30_000, roomSeq: position(3, 1) };
    const ended: PeekExpired = { type: 'PeekExpired', v: 1, roomId: room, peek: other, at: 1_000, reason: 'rejected', roomSeq: position(3, 1) };
    const endedToo: PeekExpired = { ...ended, peek: { kind: 'outbound', server: 'remote.example.org', peekId: 'p2' }, reason: 'no_active_peekers' };

    const { seq, duplicate } = await log.append('peeks', room, encodeEnvelope('cmd-multi', [started, ended, endedToo]), 0, 'cmd-multi');
    expect(duplicate).toBe(false);

    const all = await log.read('peeks', room);
    expect(all).toHaveLength(1);
    expect(all[0]!.seq).toBe(seq);
    expect(await log.lastSeq('peeks', room)).toBe(seq);

    const got = await log.get('peeks', seq);
    const env = decodePeekEnvelope(got!.data);
    expect(env).toEqual({ commandId: 'cmd-multi', events: [started, ended, endedToo] });
    // Inside an envelope roomSeq is already a position: not converted again.
    expect(env.events[0]).toMatchObject({ roomSeq: 3001 });
    expect(storedEvents(seq, env.events).map((e) => e.seq)).toEqual([position(seq, 0), position(seq, 1), position(seq, 2)]);

    // A legacy bare event after it is one more message, its roomSeq read as a position.
    const bare = await log.append('peeks', room, encodePeekEvent({ ...ended, roomSeq: 5 }), seq, 'cmd-bare');
    expect(bare).toEqual({ seq: seq + 1, duplicate: false });
    expect(decodePeekEnvelope((await log.get('peeks', bare.seq))!.data)).toEqual({ events: [{ ...ended, roomSeq: position(5, 0) }] });
    expect(await log.read('peeks', room)).toHaveLength(2);
  });

  it('keeps interleaved rooms apart: each read returns only its room, with stream sequences', async () => {
    const r1 = freshRoom('il1');
    const r2 = freshRoom('il2');
    const expected = new Map<string, { seq: number; body: string }[]>([
      [r1, []],
      [r2, []],
    ]);
    const last = new Map<string, number>([
      [r1, 0],
      [r2, 0],
    ]);
    for (let i = 0; i < 10; i++) {
      const room = i % 3 === 0 ? r2 : r1;
      const body = `${room}#${i}`;
      const { seq } = await log.append('rooms', room, bytes(body), last.get(room)!, `cmd-il-${i}`);
      last.set(room, seq);
      expected.get(room)!.push({ seq, body });
    }
    for (const room of [r1, r2]) {
      const got = await log.read('rooms', room);
      expect(got.map((r) => ({ seq: r.seq, body: text(r) }))).toEqual(expected.get(room));
      expect(await log.lastSeq('rooms', room)).toBe(last.get(room));
    }
    // Sequences are stream-wide, so a room's sequences have gaps where the other room wrote.
    const r1Seqs = expected.get(r1)!.map((e) => e.seq);
    expect(r1Seqs.some((s, i) => i > 0 && s !== r1Seqs[i - 1]! + 1)).toBe(true);
  });

  it('refuses a stale expected sequence with ConcurrencyError and appends nothing', async () => {
    const room = freshRoom('stale');
    const one = await log.append('peeks', room, bytes('one'), 0, 'cmd-stale-0');
    const two = await log.append('peeks', room, bytes('two'), one.seq, 'cmd-stale-1');
    const before = await log.read('peeks', room);

    // Expecting "empty" when it is not.
    const err = await log.append('peeks', room, bytes('x'), 0, 'cmd-stale-2').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConcurrencyError);
    expect((err as ConcurrencyError).subject).toBe(streams.naming.roomSubject('peeks', room));
    expect((err as ConcurrencyError).expectedSeq).toBe(0);

    // Expecting an older sequence than the last one.
    await expect(log.append('peeks', room, bytes('z'), one.seq, 'cmd-stale-3')).rejects.toBeInstanceOf(ConcurrencyError);
    // Expecting a sequence past the end.
    await expect(log.append('peeks', room, bytes('z'), two.seq + 1000, 'cmd-stale-4')).rejects.toBeInstanceOf(ConcurrencyError);
    // Expecting a message on an empty subject.
    await expect(log.append('peeks', freshRoom('empty'), bytes('z'), two.seq, 'cmd-stale-5')).rejects.toBeInstanceOf(ConcurrencyError);

    expect(await log.read('peeks', room)).toEqual(before);
    expect(await log.lastSeq('peeks', room)).toBe(two.seq);
    // The refused command IDs were not remembered: the same ID with the right sequence goes in.
    const ok = await log.append('peeks', room, bytes('x'), two.seq, 'cmd-stale-2');
    expect(ok).toEqual({ seq: two.seq + 1, duplicate: false });
    expect((await log.read('peeks', room)).map(text)).toEqual(['one', 'two', 'x']);
  });

  it('lets exactly one of two racing writers with the same expected sequence in', async () => {
    const room = freshRoom('race');
    const base = await log.append('peeks', room, bytes('base'), 0, 'cmd-race-0');
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => log.append('peeks', room, bytes(`w${i}`), base.seq, `cmd-race-${i + 1}`)));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(7);
    for (const f of failed) expect(f.reason).toBeInstanceOf(ConcurrencyError);
    const all = await log.read('peeks', room);
    expect(all).toHaveLength(2);
    const winner = results.findIndex((r) => r.status === 'fulfilled');
    expect(all.map(text)).toEqual(['base', `w${winner}`]);
    expect(all[1]!.seq).toBe(ok[0]!.value.seq);
  });

  it('does not append a retried command twice inside the duplicate window', async () => {
    expect(DUPLICATE_WINDOW_MS).toBeGreaterThan(10_000);
    const room = freshRoom('dup');
    const envelope = bytes('decision-1');
    const first = await log.append('peeks', room, envelope, 0, 'cmd-dup');
    expect(first.duplicate).toBe(false);

    // The retry still carries the sequence the writer saw before its first attempt.
    const retry = await log.append('peeks', room, envelope, 0, 'cmd-dup');
    expect(retry).toEqual({ seq: first.seq, duplicate: true });
    const again = await log.append('peeks', room, envelope, 0, 'cmd-dup');
    expect(again).toEqual({ seq: first.seq, duplicate: true });
    expect((await log.read('peeks', room)).map((r) => [r.seq, text(r)])).toEqual([[first.seq, 'decision-1']]);

    // Another command lands after it; then a second host re-decides the same command against the
    // newer state: a different envelope and a newer expected sequence. Still stored once, and the
    // answer names the first envelope, which the caller reads back with get.
    const other = await log.append('peeks', room, bytes('other'), first.seq, 'cmd-dup-other');
    const redecided = await log.append('peeks', room, bytes('decision-2'), other.seq, 'cmd-dup');
    expect(redecided).toEqual({ seq: first.seq, duplicate: true });
    expect(text((await log.get('peeks', redecided.seq))!)).toBe('decision-1');
    expect((await log.read('peeks', room)).map((r) => [r.seq, text(r)])).toEqual([
      [first.seq, 'decision-1'],
      [other.seq, 'other'],
    ]);
    expect(await log.lastSeq('peeks', room)).toBe(other.seq);

    // Dedupe is per stream kind: the same command ID on ROOMS is a different message.
    const rooms = await log.append('rooms', room, bytes('r0'), 0, 'cmd-dup');
    expect(rooms.duplicate).toBe(false);
    expect((await log.read('rooms', room)).map(text)).toEqual(['r0']);
    expect(await log.append('rooms', room, bytes('r0-again'), rooms.seq, 'cmd-dup')).toEqual({ seq: rooms.seq, duplicate: true });
    expect(await log.read('rooms', room)).toHaveLength(1);

    // A new command ID is a new append.
    const next = await log.append('peeks', room, bytes('next'), other.seq, 'cmd-dup-next');
    expect(next).toEqual({ seq: other.seq + 1, duplicate: false });
  });

  it('reports lastSeq 0 and reads nothing for a subject that has no messages', async () => {
    const room = freshRoom('void');
    expect(await log.lastSeq('peeks', room)).toBe(0);
    expect(await log.lastSeq('rooms', room)).toBe(0);
    expect(await log.read('peeks', room)).toEqual([]);
    expect(await log.read('rooms', room, 5)).toEqual([]);
  });

  it("handles room IDs with '.', NATS wildcards and non-ASCII characters", async () => {
    const rooms = [`!a.b.c.${uniqueName()}:example.org`, `!dots...${uniqueName()}:matrix.example.org:8448`, `!*>ünï.${uniqueName()}:example.org`, `!${uniqueName()}:[::1]:8448`];
    const seqs = new Map<string, number>();
    for (const [i, room] of rooms.entries()) {
      const subject = streams.naming.roomSubject('peeks', room);
      expect(subject.split('.')).toHaveLength(3); // prefix+kind, shard, one room token
      expect(subject.endsWith(`.${roomToken(room)}`)).toBe(true);
      expect(streams.naming.parseRoomSubject(subject)?.roomId).toBe(room);
      const { seq } = await log.append('peeks', room, bytes(`only-${i}`), 0, `cmd-dots-${i}`);
      seqs.set(room, seq);
    }
    for (const [i, room] of rooms.entries()) {
      const got = await log.read('peeks', room);
      expect(got.map((r) => [r.seq, text(r)])).toEqual([[seqs.get(room), `only-${i}`]]);
      expect(await log.lastSeq('peeks', room)).toBe(seqs.get(room));
    }
    // '!a.b' and '!a' are different rooms even though one looks like a subject prefix of the other.
    const base = `!p${uniqueName()}`;
    await log.append('rooms', `${base}:example.org`, bytes('short'), 0, 'cmd-prefix-a');
    await log.append('rooms', `${base}.x:example.org`, bytes('long'), 0, 'cmd-prefix-b');
    expect((await log.read('rooms', `${base}:example.org`)).map(text)).toEqual(['short']);
    expect((await log.read('rooms', `${base}.x:example.org`)).map(text)).toEqual(['long']);
  });

  it('reads a long history in full (more than one consumer pull)', async () => {
    const room = freshRoom('long');
    let last = 0;
    const all: string[] = [];
    // read() pulls up to 1024 messages at a time.
    for (let i = 0; i < 1100; i++) {
      const body = `m${i}`;
      ({ seq: last } = await log.append('rooms', room, bytes(body), last, `cmd-long-${i}`));
      all.push(body);
    }
    const got = await log.read('rooms', room);
    expect(got).toHaveLength(1100);
    expect(got.map(text)).toEqual(all);
    expect(got.at(-1)!.seq).toBe(last);
  });
});

describe('ensureStreams', () => {
  it('is idempotent and refuses a second start with another shard count', async () => {
    const streams = await createTestStreams(8);
    try {
      const { nc, naming } = streams;
      const jsm = await jetstreamManager(nc);
      const log = await EventLog.open(nc, naming);
      const room = `!${uniqueName()}:example.org`;
      await log.append('peeks', room, bytes('kept'), 0, 'cmd-keep');
      const before = await jsm.streams.info(naming.streamName('peeks'));
      expect(shardsFromDescription(before.config.description)).toBe(8);
      expect(before.config.subjects).toEqual([naming.allSubjects('peeks')]);

      // Again, and twice at once (two processes starting together).
      await ensureStreams(nc, naming);
      await Promise.all([ensureStreams(nc, naming), ensureStreams(nc, new Naming(naming.prefix, 8))]);
      const after = await jsm.streams.info(naming.streamName('peeks'));
      expect(after.created).toBe(before.created);
      expect(after.state.messages).toBe(1);
      expect((await log.read('peeks', room)).map(text)).toEqual(['kept']);

      for (const shards of [4, 64]) {
        const err = await ensureStreams(nc, new Naming(naming.prefix, shards)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ShardCountMismatchError);
        expect(err).toMatchObject({ configured: shards, recorded: 8 });
        expect((err as Error).message).toMatch(/PEEKD_SHARDS=8/);
      }
      // Refusing changed nothing.
      const still = await jsm.streams.info(naming.streamName('rooms'));
      expect(shardsFromDescription(still.config.description)).toBe(8);
      expect((await jsm.streams.info(naming.streamName('peeks'))).state.messages).toBe(1);
    } finally {
      await streams.cleanup();
    }
  });

  it('creates both streams racing with itself, and deleteStreams removes them', async () => {
    const streams = await createTestStreams(8);
    const naming = new Naming(`${uniqueName()}_`, 16);
    try {
      await Promise.all([ensureStreams(streams.nc, naming), ensureStreams(streams.nc, naming), ensureStreams(streams.nc, naming)]);
      const jsm = await jetstreamManager(streams.nc);
      for (const kind of ['peeks', 'rooms'] as const) {
        const info = await jsm.streams.info(naming.streamName(kind));
        expect(shardsFromDescription(info.config.description)).toBe(16);
        expect(info.config.max_age).toBe(0);
      }
      await deleteStreams(streams.nc, naming);
      await deleteStreams(streams.nc, naming); // a second delete is harmless
      const names: string[] = [];
      for await (const name of jsm.streams.names()) names.push(name);
      expect(names).not.toContain(naming.streamName('peeks'));
      expect(names).not.toContain(naming.streamName('rooms'));
    } finally {
      await deleteStreams(streams.nc, naming).catch(() => undefined);
      await streams.cleanup();
    }
  });
});

describe('stream prefixes', () => {
  it('keeps two deployments on one server apart', async () => {
    const one = await createTestStreams(8);
    try {
      const two = await createTestStreams(8);
      try {
        expect(one.naming.streamName('peeks')).not.toBe(two.naming.streamName('peeks'));
        const logOne = await EventLog.open(one.nc, one.naming);
        const logTwo = await EventLog.open(two.nc, two.naming);
        const room = `!shared.${uniqueName()}:example.org`;

        // Same room, same command ID: no cross-talk, no cross-deployment dedupe.
        const a = await logOne.append('peeks', room, bytes('from-one'), 0, 'same-cmd');
        const b = await logTwo.append('peeks', room, bytes('from-two'), 0, 'same-cmd');
        const b2 = await logTwo.append('peeks', room, bytes('from-two-again'), b.seq, 'same-cmd-2');
        expect(a.duplicate).toBe(false);
        expect(b.duplicate).toBe(false);
        // Each stream numbers its own messages from 1.
        expect(a.seq).toBe(1);
        expect([b.seq, b2.seq]).toEqual([1, 2]);
        expect(text((await logOne.get('peeks', 1))!)).toBe('from-one');
        expect(text((await logTwo.get('peeks', 1))!)).toBe('from-two');
        expect(await logOne.get('peeks', 2)).toBeNull();

        expect((await logOne.read('peeks', room)).map(text)).toEqual(['from-one']);
        expect((await logTwo.read('peeks', room)).map(text)).toEqual(['from-two', 'from-two-again']);
        expect(await logOne.lastSeq('peeks', room)).toBe(1);
        expect(await logTwo.lastSeq('peeks', room)).toBe(2);

        // Whole-stream reads see only their own deployment.
        const allOne = await logOne.readFiltered('peeks', one.naming.allSubjects('peeks'), 1, 1);
        expect(allOne.map(text)).toEqual(['from-one']);
        const allTwo = await logTwo.readFiltered('peeks', two.naming.allSubjects('peeks'), 1, 2);
        expect(allTwo.map(text)).toEqual(['from-two', 'from-two-again']);
      } finally {
        await two.cleanup();
      }
      // Deleting one deployment's streams leaves the other's log alone.
      const logOne = await EventLog.open(one.nc, one.naming);
      const jsm = await jetstreamManager(one.nc);
      expect((await jsm.streams.info(one.naming.streamName('peeks'))).state.messages).toBe(1);
      expect(await logOne.lastSeq('rooms', '!nothing:example.org')).toBe(0);
    } finally {
      await one.cleanup();
    }
  });
});
