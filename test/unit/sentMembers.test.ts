// What a lazy-loading device has received of a room's member events: an answer's member
// events become the device's once it syncs from that answer's position; an answer it never
// syncs from was lost. Per device and sync sequence, bounded.
import { describe, expect, it } from 'vitest';
import { newLazySeq, SentMembers } from '../../src/syncapi/sentMembers.ts';
import { formatSyncToken, parseSyncToken } from '../../src/syncapi/syncToken.ts';
import type { StoredEvent } from '../../src/syncapi/roomReader.ts';

const member = (userId: string, eventId: string): StoredEvent =>
  ({ seq: 1, eventId, pdu: { type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'join' } } }) as unknown as StoredEvent;
const device = { userId: '@me:hs', deviceId: 'D' };
const room = '!r:hs';

describe('SentMembers', () => {
  it('gives the device an answer’s member events once it syncs from that answer, only those very events', () => {
    const sent = new SentMembers();
    const seq = newLazySeq();
    const bob = member('@bob:hs', '$join');
    sent.record(device, seq, room, [bob, { ...bob, pdu: { ...bob.pdu, type: 'm.room.message' } } as StoredEvent], 5_000);
    expect(sent.has(device, seq, room, bob, 5_000)).toBe(false); // on its way
    sent.syncedFrom(device, seq, 5_000);
    expect(sent.has(device, seq, room, bob, 5_000)).toBe(true);
    expect(sent.has(device, seq, room, member('@bob:hs', '$newer'), 9_000)).toBe(false); // bob changed since
    expect(sent.has(device, seq, '!other:hs', bob, 9_000)).toBe(false);
    expect(sent.has(device, newLazySeq(), room, bob, 9_000)).toBe(false); // another sequence (a new initial sync)
    expect(sent.has({ ...device, deviceId: 'E' }, seq, room, bob, 9_000)).toBe(false); // another device with the token
  });

  it('forgets what a lost answer carried: the device synced from an older position, then moved on from another answer', () => {
    const sent = new SentMembers();
    const seq = newLazySeq();
    const charlie = member('@charlie:hs', '$c');
    sent.syncedFrom(device, seq, 1_000);
    sent.record(device, seq, room, [charlie], 2_000); // lost
    sent.syncedFrom(device, seq, 1_000); // the retry
    sent.record(device, seq, room, [], 3_000); // its answer carries no charlie
    sent.syncedFrom(device, seq, 3_000);
    expect(sent.has(device, seq, room, charlie, 3_000)).toBe(false);
    // Carried again, and this time received.
    sent.record(device, seq, room, [charlie], 4_000);
    sent.syncedFrom(device, seq, 4_000);
    expect(sent.has(device, seq, room, charlie, 4_000)).toBe(true);
    // Carried again by a later answer that is lost: the device still has it.
    sent.record(device, seq, room, [charlie], 5_000);
    sent.syncedFrom(device, seq, 4_000);
    expect(sent.has(device, seq, room, charlie, 4_000)).toBe(true);
  });

  it('keeps the latest member events, dropping the least recently used past the bound', () => {
    const sent = new SentMembers(3);
    const seq = newLazySeq();
    const m = ['@a:hs', '@b:hs', '@c:hs', '@d:hs'].map((u, i) => member(u, `$e${i}`));
    sent.record(device, seq, room, m.slice(0, 3), 1);
    sent.syncedFrom(device, seq, 1);
    sent.record(device, seq, room, [m[3]!], 3);
    sent.syncedFrom(device, seq, 3);
    expect(m.map((e) => sent.has(device, seq, room, e, 10))).toEqual([false, true, true, true]);
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
