// What a device has been sent of a room's member events (lazy-loaded members): counted as
// the device's only from the position of the answer that carried it on, bounded per device.
import { describe, expect, it } from 'vitest';
import { SentMembers } from '../../src/syncapi/sentMembers.ts';
import type { StoredEvent } from '../../src/syncapi/roomReader.ts';

const member = (userId: string, eventId: string): StoredEvent =>
  ({ seq: 1, eventId, pdu: { type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'join' } } }) as unknown as StoredEvent;
const device = { userId: '@me:hs', deviceId: 'D' };

describe('SentMembers', () => {
  it('counts a member event as the device’s from the answer’s position on, and only that very event', () => {
    const sent = new SentMembers();
    const bob = member('@bob:hs', '$join');
    sent.record(device, '!r:hs', [bob, { ...bob, pdu: { ...bob.pdu, type: 'm.room.message' } } as StoredEvent], 5_000);
    expect(sent.has(device, '!r:hs', bob, 4_999)).toBe(false); // that answer may have been lost
    expect(sent.has(device, '!r:hs', bob, 5_000)).toBe(true);
    expect(sent.has(device, '!r:hs', member('@bob:hs', '$newer'), 9_000)).toBe(false); // bob changed since
    expect(sent.has(device, '!other:hs', bob, 9_000)).toBe(false);
    expect(sent.has({ ...device, deviceId: 'E' }, '!r:hs', bob, 9_000)).toBe(false);
    // Carried again by a later answer: the first one still counts.
    sent.record(device, '!r:hs', [bob], 8_000);
    expect(sent.has(device, '!r:hs', bob, 5_000)).toBe(true);
    // It knows bob from that answer on, whichever member event of his it holds.
    expect(sent.knows(device, '!r:hs', '@bob:hs', 4_999)).toBe(false);
    expect(sent.knows(device, '!r:hs', '@bob:hs', 5_000)).toBe(true);
    expect(sent.knows(device, '!r:hs', '@carol:hs', 9_000)).toBe(false);
    sent.forget(device);
    expect(sent.knows(device, '!r:hs', '@bob:hs', 9_000)).toBe(false);
    expect(sent.has(device, '!r:hs', bob, 9_000)).toBe(false);
  });

  it('keeps the latest member events per device, dropping the oldest past the bound', () => {
    const sent = new SentMembers(3);
    const m = ['@a:hs', '@b:hs', '@c:hs', '@d:hs'].map((u, i) => member(u, `$e${i}`));
    sent.record(device, '!r:hs', m.slice(0, 3), 1);
    sent.record(device, '!r:hs', [m[0]!], 2); // the same event again: still the oldest entry
    sent.record(device, '!r:hs', [m[3]!], 3);
    expect(m.map((e) => sent.has(device, '!r:hs', e, 10))).toEqual([false, true, true, true]);
  });
});
