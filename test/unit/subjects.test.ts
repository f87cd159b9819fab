// Stream/subject naming: FNV-1a sharding, room tokens, subject round trips, prefixes.
import { describe, expect, it } from 'vitest';
import { DEFAULT_SHARDS, Naming, fnv1a32, roomIdFromToken, roomToken } from '../../src/events/subjects.ts';

/** FNV-1a 32-bit straight from its definition (BigInt, no Math.imul): offset basis, xor byte, multiply by the FNV prime mod 2^32. */
function fnv1a32Reference(text: string): number {
  let hash = 0x811c9dc5n;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x01000193n) & 0xffffffffn;
  }
  return Number(hash);
}

const ROOM_IDS = [
  '!abc:example.org',
  '!a.b.c:example.org', // '.' is NATS's token separator
  '!dots...:matrix.example.org:8448',
  '!ünï/cödé*>:example.org', // non-ASCII and NATS wildcards
  '!room:[::1]:8448',
  `!${'x'.repeat(240)}:example.org`,
];

describe('fnv1a32', () => {
  // The published FNV-1a 32-bit test vectors (Landon Curt Noll, test_fnv.c).
  it.each([
    ['', 0x811c9dc5],
    ['a', 0xe40c292c],
    ['b', 0xe70c2de5],
    ['c', 0xe60c2c52],
    ['fo', 0x6222e842],
    ['foo', 0xa9f37ed7],
    ['foob', 0x3f5076ef],
    ['fooba', 0x39aaa18a],
    ['foobar', 0xbf9cf968],
  ])('fnv1a32(%j) = %i', (text, expected) => {
    expect(fnv1a32(text)).toBe(expected);
    expect(fnv1a32Reference(text)).toBe(expected);
  });

  it('hashes the UTF-8 bytes: é is 0xc3 0xa9', () => {
    // ((0x811c9dc5 ^ 0xc3) * p ^ 0xa9) * p mod 2^32
    expect(fnv1a32('é')).toBe(0x1e9de8c1);
    expect(fnv1a32Reference('é')).toBe(0x1e9de8c1);
  });

  it('agrees with the reference definition for room IDs and arbitrary strings, and is an unsigned 32-bit integer', () => {
    const samples = [...ROOM_IDS, ...Array.from({ length: 200 }, (_, i) => `!r${i * 7919}😀:s${i}.example.org`)];
    for (const s of samples) {
      const h = fnv1a32(s);
      expect(h).toBe(fnv1a32Reference(s));
      expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
    }
  });
});

describe('room tokens', () => {
  it('is the unpadded base64url of the UTF-8 room ID', () => {
    expect(roomToken('!abc:example.org')).toBe('IWFiYzpleGFtcGxlLm9yZw');
    expect(roomToken('!a.b.c:example.org')).toBe('IWEuYi5jOmV4YW1wbGUub3Jn');
  });

  it.each(ROOM_IDS)('round-trips %j and is a single NATS token', (roomId) => {
    const token = roomToken(roomId);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/); // no '.', '*', '>', whitespace or '='
    expect(roomIdFromToken(token)).toBe(roomId);
  });
});

describe('Naming', () => {
  const naming = new Naming('', DEFAULT_SHARDS);
  const t1 = new Naming('t1_', 8);

  it('builds room subjects <prefix><kind>.<shard>.<token>', () => {
    const shard = fnv1a32('!abc:example.org') % 64;
    expect(naming.roomSubject('peeks', '!abc:example.org')).toBe(`peeks.${shard}.IWFiYzpleGFtcGxlLm9yZw`);
    expect(naming.roomSubject('rooms', '!abc:example.org')).toBe(`rooms.${shard}.IWFiYzpleGFtcGxlLm9yZw`);
    expect(t1.roomSubject('rooms', '!abc:example.org')).toBe(`t1_rooms.${fnv1a32('!abc:example.org') % 8}.IWFiYzpleGFtcGxlLm9yZw`);
  });

  it.each(ROOM_IDS)('a room ID (%j) is exactly one token of its subject', (roomId) => {
    for (const n of [naming, t1]) {
      for (const kind of ['peeks', 'rooms'] as const) {
        const parts = n.roomSubject(kind, roomId).split('.');
        expect(parts).toEqual([n.subjectRoot(kind), String(n.shardOf(roomId)), roomToken(roomId)]);
      }
    }
  });

  it.each(ROOM_IDS)('parseRoomSubject round-trips %j', (roomId) => {
    for (const n of [naming, t1, new Naming('A-b_9', 4096)]) {
      for (const kind of ['peeks', 'rooms'] as const) {
        expect(n.parseRoomSubject(n.roomSubject(kind, roomId))).toEqual({ kind, shard: n.shardOf(roomId), roomId });
      }
    }
  });

  it('parseRoomSubject refuses subjects of another prefix or another root', () => {
    const subject = naming.roomSubject('peeks', '!abc:example.org');
    expect(t1.parseRoomSubject(subject)).toBeNull();
    expect(naming.parseRoomSubject(t1.roomSubject('peeks', '!abc:example.org'))).toBeNull();
    expect(naming.parseRoomSubject('peekd.cmd.3')).toBeNull();
    expect(naming.parseRoomSubject('peeks')).toBeNull();
    expect(naming.parseRoomSubject('peeks.3')).toBeNull();
    expect(naming.parseRoomSubject('other.3.IWFiYzpleGFtcGxlLm9yZw')).toBeNull();
  });

  // Regression (was a bug): parseRoomSubject only splits the rest of the subject; it does not check that
  // the shard token is a decimal shard number in range, nor that nothing follows the room
  // token. 'peeks.x.<token>' parses with shard NaN, 'peeks.999.<token>' with shard 999 of a
  // 64-shard deployment, and 'peeks.3.<token>.extra' silently drops 'extra' — instead of null.
  it('parseRoomSubject refuses a non-numeric or out-of-range shard and extra tokens', () => {
    const token = roomToken('!abc:example.org');
    expect(naming.parseRoomSubject(`peeks.x.${token}`)).toBeNull();
    expect(naming.parseRoomSubject(`peeks.999.${token}`)).toBeNull();
    expect(naming.parseRoomSubject(`peeks.3.${token}.extra`)).toBeNull();
  });

  it('shards are in range and equal fnv1a32(roomId) mod S', () => {
    const ids = [...ROOM_IDS, ...Array.from({ length: 500 }, (_, i) => `!room${i}:server${i % 13}.example`)];
    for (const shards of [1, 2, 7, 64, 4096]) {
      const n = new Naming('', shards);
      const seen = new Set<number>();
      for (const id of ids) {
        const shard = n.shardOf(id);
        expect(Number.isInteger(shard)).toBe(true);
        expect(shard).toBeGreaterThanOrEqual(0);
        expect(shard).toBeLessThan(shards);
        expect(shard).toBe(fnv1a32Reference(id) % shards);
        seen.add(shard);
      }
      // the room IDs spread over the shards, not all into one
      if (shards > 1) expect(seen.size).toBeGreaterThan(1);
      if (shards === 7) expect(seen.size).toBe(7);
    }
  });

  it('a room subject is matched by its shard filter and the all-subjects filter', () => {
    const roomId = '!a.b.c:example.org';
    const subject = t1.roomSubject('peeks', roomId);
    expect(t1.shardFilter('peeks', t1.shardOf(roomId))).toBe(`t1_peeks.${t1.shardOf(roomId)}.>`);
    expect(subject.startsWith(t1.shardFilter('peeks', t1.shardOf(roomId)).slice(0, -1))).toBe(true);
    expect(t1.allSubjects('rooms')).toBe('t1_rooms.>');
  });

  it('names streams, commands, wake-ups, buckets and consumers under the prefix', () => {
    expect(naming.streamName('peeks')).toBe('PEEKS');
    expect(t1.streamName('rooms')).toBe('t1_ROOMS');
    expect(t1.subjectRoot('peeks')).toBe('t1_peeks');
    expect(t1.commandSubject(5)).toBe('t1_peekd.cmd.5');
    expect(t1.wakeSubject()).toBe('t1_peekd.wake');
    expect(t1.kvBucket('leases')).toBe('t1_peekd_leases');
    expect(t1.consumerName('sync.proj')).toBe('t1_sync_proj');
  });

  describe('prefix and shard-count validation', () => {
    it.each(['', 't1_', 'A-b_9', 'x'.repeat(64)])('accepts prefix %j', (prefix) => {
      expect(new Naming(prefix, 1).prefix).toBe(prefix);
    });

    it.each(['a.b', 'a b', 'a>', '*', 'x'.repeat(65), 'é', 'a/b'])('refuses prefix %j', (prefix) => {
      expect(() => new Naming(prefix, 1)).toThrow(/stream prefix must match/);
    });

    it.each([1, 64, 4096])('accepts %i shards', (shards) => {
      expect(new Naming('', shards).shards).toBe(shards);
    });

    it.each([0, -1, 4097, 1.5, Number.NaN])('refuses %s shards', (shards) => {
      expect(() => new Naming('', shards)).toThrow(/shard count must be 1\.\.4096/);
    });
  });
});
