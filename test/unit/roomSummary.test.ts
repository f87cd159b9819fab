// The /sync room summary: heroes to name a room by, and its joined and invited counts.
import { describe, expect, it } from 'vitest';
import { roomSummary } from '../../src/syncapi/roomSummary.ts';
import type { StoredEvent } from '../../src/syncapi/roomReader.ts';

let seq = 0;
const member = (userId: string, membership: string): StoredEvent =>
  ({ seq: ++seq, eventId: `$m${seq}`, pdu: { type: 'm.room.member', state_key: userId, sender: userId, content: { membership } } }) as unknown as StoredEvent;
const other = (type: string, content: Record<string, unknown> = {}): StoredEvent =>
  ({ seq: ++seq, eventId: `$e${seq}`, pdu: { type, state_key: '', sender: '@a:hs', content } }) as unknown as StoredEvent;

describe('roomSummary', () => {
  it('names the first five joined or invited members by position, never the reader, and counts joins and invites', () => {
    const state = [
      other('m.room.create'),
      ...['@a', '@b', '@c'].map((u) => member(`${u}:hs`, 'join')),
      member('@i:hs', 'invite'),
      member('@l:hs', 'leave'),
      ...['@d', '@e', '@f'].map((u) => member(`${u}:hs`, 'join')),
    ];
    expect(roomSummary(state, '@b:hs')).toEqual({ 'm.heroes': ['@a:hs', '@c:hs', '@i:hs', '@d:hs', '@e:hs'], 'm.joined_member_count': 6, 'm.invited_member_count': 1 });
    // A peeker (no membership): nobody left out.
    expect(roomSummary(state, null)['m.heroes']).toEqual(['@a:hs', '@b:hs', '@c:hs', '@i:hs', '@d:hs']);
    // Ordered by position, whatever order the state came in.
    expect(roomSummary([...state].reverse(), null)['m.heroes']).toEqual(['@a:hs', '@b:hs', '@c:hs', '@i:hs', '@d:hs']);
  });

  it('falls back to members who left or were banned when nobody else is joined or invited', () => {
    const state = [member('@me:hs', 'join'), member('@gone:hs', 'leave'), member('@bad:hs', 'ban')];
    expect(roomSummary(state, '@me:hs')).toEqual({ 'm.heroes': ['@gone:hs', '@bad:hs'], 'm.joined_member_count': 1, 'm.invited_member_count': 0 });
    expect(roomSummary([other('m.room.create')], null)).toEqual({ 'm.heroes': [], 'm.joined_member_count': 0, 'm.invited_member_count': 0 });
  });

  it('gives no heroes to a room with a name or a canonical alias, and heroes again when they are empty', () => {
    const people = [member('@me:hs', 'join'), member('@x:hs', 'join'), member('@y:hs', 'invite')];
    const counts = { 'm.joined_member_count': 2, 'm.invited_member_count': 1 };
    expect(roomSummary([other('m.room.name', { name: 'A room name' }), ...people], '@me:hs')).toEqual(counts);
    expect(roomSummary([other('m.room.canonical_alias', { alias: '#a:hs' }), ...people], '@me:hs')).toEqual(counts);
    // A name or alias removed (empty) names nothing: the heroes are back.
    expect(roomSummary([other('m.room.name', { name: '' }), other('m.room.canonical_alias', {}), ...people], '@me:hs')).toEqual({ 'm.heroes': ['@x:hs', '@y:hs'], ...counts });
  });
});
