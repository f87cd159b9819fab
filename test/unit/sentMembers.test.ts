// What a sync sequence has been sent of a room's member events (lazy-loaded members): counted
// as the device's only from the position of the answer that carried it on, per sequence,
// bounded over all of them.
import { describe, expect, it } from 'vitest';
import { newLazySeq, SentMembers } from '../../src/syncapi/sentMembers.ts';
import { formatSyncToken, parseSyncToken } from '../../src/syncapi/syncToken.ts';
import type { StoredEvent } from '../../src/syncapi/roomReader.ts';

const member = (userId: string, eventId: string): StoredEvent =>
  ({ seq: 1, eventId, pdu: { type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'join' } } }) as unknown as StoredEvent;

describe('SentMembers', () => {
  it('counts a member event as the sequence’s from the answer’s position on, and only that very event', () => {
    const sent = new SentMembers();
    const seq = newLazySeq();
    const bob = member('@bob:hs', '$join');
    sent.record(seq, '!r:hs', [bob, { ...bob, pdu: { ...bob.pdu, type: 'm.room.message' } } as StoredEvent], 5_000);
    expect(sent.has(seq, '!r:hs', bob, 4_999)).toBe(false); // that answer may have been lost
    expect(sent.has(seq, '!r:hs', bob, 5_000)).toBe(true);
    expect(sent.has(seq, '!r:hs', member('@bob:hs', '$newer'), 9_000)).toBe(false); // bob changed since
    expect(sent.has(seq, '!other:hs', bob, 9_000)).toBe(false);
    expect(sent.has(newLazySeq(), '!r:hs', bob, 9_000)).toBe(false); // another sequence (a new initial sync)
    // Carried again by a later answer: the first one still counts.
    sent.record(seq, '!r:hs', [bob], 8_000);
    expect(sent.has(seq, '!r:hs', bob, 5_000)).toBe(true);
  });

  it('keeps the latest member events, dropping the least recently used past the bound', () => {
    const sent = new SentMembers(3);
    const seq = newLazySeq();
    const m = ['@a:hs', '@b:hs', '@c:hs', '@d:hs'].map((u, i) => member(u, `$e${i}`));
    sent.record(seq, '!r:hs', m.slice(0, 3), 1);
    sent.record(seq, '!r:hs', [m[3]!], 3);
    expect(m.map((e) => sent.has(seq, '!r:hs', e, 10))).toEqual([false, true, true, true]);
  });

  it('carries a sequence in the sync token, and reads tokens without one', () => {
    const seq = newLazySeq();
    expect(seq).toMatch(/^[0-9a-z]{16}$/);
    const token = formatSyncToken({ rooms: 12_000, peeks: 7_000, clientData: 3, lazySeq: seq });
    expect(token).toBe(`s12000_7000_3_${seq}`);
    expect(parseSyncToken(token)).toEqual({ rooms: 12_000, peeks: 7_000, clientData: 3, lazySeq: seq });
    expect(parseSyncToken('s12000_7000_3')).toEqual({ rooms: 12_000, peeks: 7_000, clientData: 3 });
    expect(parseSyncToken('s12000_7000_3_NOT-OK')).toBeNull();
    expect(formatSyncToken({ rooms: 1, peeks: 2, clientData: 3, lazySeq: 'x y' })).toBe('s1_2_3');
  });
});
