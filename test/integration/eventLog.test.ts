// The room-subject event log on a real JetStream: append with the expected last subject
// sequence, Nats-Msg-Id dedupe, reads, stream creation and prefix isolation.
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Naming, roomToken } from '../../src/events/subjects';
import { DUPLICATE_WINDOW_MS, shardsFromDescription } from '../../src/events/streams';
import { ConcurrencyError, ShardCountMismatchError } from '../../src/nats/errors';
import { EventLog, type LogRecord } from '../../src/nats/eventLog';
import { deleteStreams, ensureStreams } from '../../src/nats/streams';
import { createTestStreams, uniqueName, type TestStreams } from '../helpers/services';

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
    const first = await log.append('peeks', room, [bytes('a'), bytes('b'), bytes('c')], 0, 'cmd-read-1');
    expect(first.duplicate).toBe(false);
    expect(first.seqs).toHaveLength(3);
    expect(first.seqs[1]).toBe(first.seqs[0]! + 1);
    expect(first.seqs[2]).toBe(first.seqs[0]! + 2);
    const second = await log.append('peeks', room, [bytes('d')], first.seqs[2]!, 'cmd-read-2');
    expect(second).toEqual({ seqs: [first.seqs[2]! + 1], duplicate: false });

    const all = await log.read('peeks', room);
    expect(all.map((r) => r.seq)).toEqual([...first.seqs, ...second.seqs]);
    expect(all.map(text)).toEqual(['a', 'b', 'c', 'd']);
    expect(await log.lastSeq('peeks', room)).toBe(second.seqs[0]);

    // From a sequence in the middle, and past the end.
    const tail = await log.read('peeks', room, first.seqs[2]!);
    expect(tail.map((r) => [r.seq, text(r)])).toEqual([
      [first.seqs[2], 'c'],
      [second.seqs[0], 'd'],
    ]);
    expect(await log.read('peeks', room, second.seqs[0]! + 1)).toEqual([]);
    // The other stream's subject of the same room is untouched.
    expect(await log.read('rooms', room)).toEqual([]);
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
      const { seqs } = await log.append('rooms', room, [bytes(body)], last.get(room)!, `cmd-il-${i}`);
      last.set(room, seqs[0]!);
      expected.get(room)!.push({ seq: seqs[0]!, body });
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
    const { seqs } = await log.append('peeks', room, [bytes('one'), bytes('two')], 0, 'cmd-stale-1');
    const before = await log.read('peeks', room);

    // Expecting "empty" when it is not.
    const err = await log.append('peeks', room, [bytes('x'), bytes('y')], 0, 'cmd-stale-2').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConcurrencyError);
    expect((err as ConcurrencyError).subject).toBe(streams.naming.roomSubject('peeks', room));
    expect((err as ConcurrencyError).expectedSeq).toBe(0);

    // Expecting an older sequence than the last one.
    await expect(log.append('peeks', room, [bytes('z')], seqs[0]!, 'cmd-stale-3')).rejects.toBeInstanceOf(ConcurrencyError);
    // Expecting a sequence past the end.
    await expect(log.append('peeks', room, [bytes('z')], seqs[1]! + 1000, 'cmd-stale-4')).rejects.toBeInstanceOf(ConcurrencyError);
    // Expecting a message on an empty subject.
    await expect(log.append('peeks', freshRoom('empty'), [bytes('z')], seqs[1]!, 'cmd-stale-5')).rejects.toBeInstanceOf(ConcurrencyError);

    expect(await log.read('peeks', room)).toEqual(before);
    expect(await log.lastSeq('peeks', room)).toBe(seqs[1]);
    // The refused command IDs were not remembered: the same ID with the right sequence goes in.
    const ok = await log.append('peeks', room, [bytes('x')], seqs[1]!, 'cmd-stale-2');
    expect(ok).toEqual({ seqs: [seqs[1]! + 1], duplicate: false });
  });

  it('lets exactly one of two racing writers with the same expected sequence in', async () => {
    const room = freshRoom('race');
    const { seqs } = await log.append('peeks', room, [bytes('base')], 0, 'cmd-race-0');
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => log.append('peeks', room, [bytes(`w${i}`)], seqs[0]!, `cmd-race-${i + 1}`)),
    );
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(7);
    for (const f of failed) expect(f.reason).toBeInstanceOf(ConcurrencyError);
    expect(await log.read('peeks', room)).toHaveLength(2);
  });

  it('does not append a retried command twice inside the duplicate window', async () => {
    expect(DUPLICATE_WINDOW_MS).toBeGreaterThan(10_000);
    const room = freshRoom('dup');
    const payloads = [bytes('p0'), bytes('p1'), bytes('p2')];
    const first = await log.append('peeks', room, payloads, 0, 'cmd-dup');
    expect(first.duplicate).toBe(false);

    // The retry still carries the sequence the writer saw before its first attempt.
    const retry = await log.append('peeks', room, payloads, 0, 'cmd-dup');
    expect(retry).toEqual({ seqs: first.seqs, duplicate: true });
    const again = await log.append('peeks', room, payloads, 0, 'cmd-dup');
    expect(again).toEqual({ seqs: first.seqs, duplicate: true });

    const all = await log.read('peeks', room);
    expect(all.map(text)).toEqual(['p0', 'p1', 'p2']);
    expect(all.map((r) => r.seq)).toEqual(first.seqs);

    // Dedupe is per stream kind: the same command ID on ROOMS is a different message.
    const rooms = await log.append('rooms', room, [bytes('r0')], 0, 'cmd-dup');
    expect(rooms.duplicate).toBe(false);
    expect(await log.read('rooms', room)).toHaveLength(1);

    // A new command ID is a new append.
    const next = await log.append('peeks', room, [bytes('p3')], first.seqs[2]!, 'cmd-dup-next');
    expect(next).toEqual({ seqs: [first.seqs[2]! + 1], duplicate: false });
  });

  it('finishes a partly appended command on retry without duplicating its first part', async () => {
    const room = freshRoom('partial');
    // The first attempt got only its first event in (as if the writer died after one publish).
    const part = await log.append('peeks', room, [bytes('e0')], 0, 'cmd-partial');
    const retry = await log.append('peeks', room, [bytes('e0'), bytes('e1')], 0, 'cmd-partial');
    expect(retry.duplicate).toBe(true);
    expect(retry.seqs[0]).toBe(part.seqs[0]);
    expect(retry.seqs[1]).toBe(part.seqs[0]! + 1);
    expect((await log.read('peeks', room)).map(text)).toEqual(['e0', 'e1']);
  });

  it('appends nothing for an empty payload list', async () => {
    const room = freshRoom('none');
    expect(await log.append('peeks', room, [], 0, 'cmd-none')).toEqual({ seqs: [], duplicate: false });
    expect(await log.lastSeq('peeks', room)).toBe(0);
  });

  it('reports lastSeq 0 and reads nothing for a subject that has no messages', async () => {
    const room = freshRoom('void');
    expect(await log.lastSeq('peeks', room)).toBe(0);
    expect(await log.lastSeq('rooms', room)).toBe(0);
    expect(await log.read('peeks', room)).toEqual([]);
    expect(await log.read('rooms', room, 5)).toEqual([]);
  });

  it("handles room IDs with '.', NATS wildcards and non-ASCII characters", async () => {
    const rooms = [
      `!a.b.c.${uniqueName()}:example.org`,
      `!dots...${uniqueName()}:matrix.example.org:8448`,
      `!*>ünï.${uniqueName()}:example.org`,
      `!${uniqueName()}:[::1]:8448`,
    ];
    const seqs = new Map<string, number>();
    for (const [i, room] of rooms.entries()) {
      const subject = streams.naming.roomSubject('peeks', room);
      expect(subject.split('.')).toHaveLength(3); // prefix+kind, shard, one room token
      expect(subject.endsWith(`.${roomToken(room)}`)).toBe(true);
      expect(streams.naming.parseRoomSubject(subject)?.roomId).toBe(room);
      const { seqs: s } = await log.append('peeks', room, [bytes(`only-${i}`)], 0, `cmd-dots-${i}`);
      seqs.set(room, s[0]!);
    }
    for (const [i, room] of rooms.entries()) {
      const got = await log.read('peeks', room);
      expect(got.map((r) => [r.seq, text(r)])).toEqual([[seqs.get(room), `only-${i}`]]);
      expect(await log.lastSeq('peeks', room)).toBe(seqs.get(room));
    }
    // '!a.b' and '!a' are different rooms even though one looks like a subject prefix of the other.
    const base = `!p${uniqueName()}`;
    await log.append('rooms', `${base}:example.org`, [bytes('short')], 0, 'cmd-prefix-a');
    await log.append('rooms', `${base}.x:example.org`, [bytes('long')], 0, 'cmd-prefix-b');
    expect((await log.read('rooms', `${base}:example.org`)).map(text)).toEqual(['short']);
    expect((await log.read('rooms', `${base}.x:example.org`)).map(text)).toEqual(['long']);
  });

  it('reads a long history in full (more than one consumer pull)', async () => {
    const room = freshRoom('long');
    let last = 0;
    const all: string[] = [];
    for (let chunk = 0; chunk < 6; chunk++) {
      const payloads = Array.from({ length: 500 }, (_, i) => `m${chunk * 500 + i}`);
      const { seqs } = await log.append('rooms', room, payloads.map(bytes), last, `cmd-long-${chunk}`);
      last = seqs.at(-1)!;
      all.push(...payloads);
    }
    const got = await log.read('rooms', room);
    expect(got).toHaveLength(3000);
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
      await log.append('peeks', room, [bytes('kept')], 0, 'cmd-keep');
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
        const a = await logOne.append('peeks', room, [bytes('from-one')], 0, 'same-cmd');
        const b = await logTwo.append('peeks', room, [bytes('from-two'), bytes('from-two-again')], 0, 'same-cmd');
        expect(a.duplicate).toBe(false);
        expect(b.duplicate).toBe(false);
        // Each stream numbers its own messages from 1.
        expect(a.seqs).toEqual([1]);
        expect(b.seqs).toEqual([1, 2]);

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
