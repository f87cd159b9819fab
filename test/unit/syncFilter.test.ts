// Filter type patterns (`*` for any run of characters), matched without a regular
// expression: the answers, and no blow-up on patterns made of many stars.
import { describe, expect, it } from 'vitest';
import { keeps, matchesPattern, selects, syncFilterOf } from '../../src/syncapi/syncFilter.ts';

describe('filter patterns', () => {
  it('match as the specification describes: * is any run of characters, the rest is literal', () => {
    const cases: [string, string, boolean][] = [
      ['m.room.message', 'm.room.message', true],
      ['m.room.message', 'm.room.messages', false],
      ['m.*', 'm.room.message', true],
      ['m.room.*', 'm.room', false],
      ['*.message', 'm.room.message', true],
      ['*', '', true],
      ['a*b*c', 'axxbyyc', true],
      ['a*b*c', 'axxbyy', false],
      ['a**b', 'ab', true],
      ['x*', 'yx', false],
      ['m.room.?', 'm.room.a', false], // no other wildcard
      ['m.room.[a]', 'm.room.[a]', true], // regex characters are literal
    ];
    for (const [pattern, value, want] of cases) expect({ pattern, value, match: matchesPattern(pattern, value) }).toEqual({ pattern, value, match: want });
  });

  // A backtracking regular expression would not finish this within the test's timeout.
  it('answers a pattern of many stars against a long type (no catastrophic backtracking)', () => {
    expect(matchesPattern(`${'*a'.repeat(40)}*b`, 'a'.repeat(255))).toBe(false);
    expect(matchesPattern(`${'*a'.repeat(40)}*`, 'a'.repeat(255))).toBe(true);
  });
});

describe('contains_url', () => {
  it('keeps only events whose content has a url key (true), only the others (false), all when absent', () => {
    const withUrl = syncFilterOf({ room: { timeline: { contains_url: true } } }).timeline;
    const withoutUrl = syncFilterOf({ room: { timeline: { contains_url: false } } }).timeline;
    const any = syncFilterOf({}).timeline;
    expect(withUrl.containsUrl).toBe(true);
    expect(selects(withUrl) && selects(withoutUrl) && !selects(any)).toBe(true);
    for (const [content, has] of [
      [{ msgtype: 'm.image', url: 'mxc://hs/x' }, true],
      [{ msgtype: 'm.file', url: null }, true], // the key is there
      [{ msgtype: 'm.text', body: 'url' }, false],
      [{}, false],
    ] as const) {
      expect(keeps(withUrl, 'm.room.message', '@a:hs', content)).toBe(has);
      expect(keeps(withoutUrl, 'm.room.message', '@a:hs', content)).toBe(!has);
      expect(keeps(any, 'm.room.message', '@a:hs', content)).toBe(true);
    }
    // A filter whose contains_url is not a boolean does not ask it.
    expect(syncFilterOf({ room: { timeline: { contains_url: 'yes' } } }).timeline.containsUrl).toBeUndefined();
  });
});
