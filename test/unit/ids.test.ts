// Matrix identifier grammar (spec appendix "Identifier Grammar") as src/events/ids.ts checks it.
import { describe, expect, it } from 'vitest';
import { isValidDeviceId, isValidPeekId, isValidRoomAlias, isValidRoomId, isValidServerName, isValidUserId, localpartOf, serverOf } from '../../src/events/ids.ts';

/** `sigil + local + ':' + server`, padded in the localpart to exactly `bytes` UTF-8 bytes. */
function idOfBytes(sigil: string, server: string, bytes: number, fill = 'a'): string {
  const fixed = Buffer.byteLength(`${sigil}:${server}`);
  const fillBytes = Buffer.byteLength(fill);
  const n = Math.floor((bytes - fixed) / fillBytes);
  const id = `${sigil}${fill.repeat(n)}${'a'.repeat(bytes - fixed - n * fillBytes)}:${server}`;
  expect(Buffer.byteLength(id)).toBe(bytes);
  return id;
}

describe('server names', () => {
  it.each([
    'example.org',
    'localhost',
    'matrix.example.org',
    'example.org:8448',
    'example.org:1',
    'example.org:65535',
    '1.2.3.4',
    '1.2.3.4:1234',
    '[1234:5678::abcd]',
    '[1234:5678::abcd]:5678',
    '[::1]',
    '[::1]:65535',
    'xn--bcher-kva.example',
    'a-b.c-d',
  ])('accepts %j', (name) => {
    expect(isValidServerName(name)).toBe(true);
  });

  it.each([
    '',
    'exa mple.org',
    'example_org',
    'example.org:',
    'example.org:abc',
    'example.org:65536',
    'example.org:99999',
    'example.org:123456',
    'example.org:8448:1',
    '[::1',
    '::1',
    '[::1]:65536',
    '[zz::1]',
    '[]',
    'ex/ample.org',
    'exämple.org',
    'a'.repeat(256),
  ])('refuses %j', (name) => {
    expect(isValidServerName(name)).toBe(false);
  });
});

describe('room IDs', () => {
  it.each(['!abc:example.org', '!a:example.org', '!abc:example.org:8448', '!abc:[::1]:8448', '!abc:1.2.3.4', '!AbC_-.=+/:example.org', '!ünïcode:example.org'])('accepts %j', (id) => {
    expect(isValidRoomId(id)).toBe(true);
  });

  it.each([
    ['empty', ''],
    ['no sigil', 'abc:example.org'],
    ['wrong sigil (alias)', '#abc:example.org'],
    ['wrong sigil (user)', '@abc:example.org'],
    ['empty localpart', '!:example.org'],
    ['no server', '!abc'],
    ['empty server', '!abc:'],
    ['bad server', '!abc:exa mple.org'],
    ['port out of range', '!abc:example.org:99999'],
    ['whitespace in localpart', '!a b:example.org'],
    ['tab in localpart', '!a\tb:example.org'],
    ['NUL in localpart', '!a\0b:example.org'],
    ['a second colon with junk', '!abc:example.org:x'],
  ])('refuses %s: %j', (_what, id) => {
    expect(isValidRoomId(id)).toBe(false);
  });

  it('accepts exactly 255 bytes and refuses 256', () => {
    expect(isValidRoomId(idOfBytes('!', 'example.org', 255))).toBe(true);
    expect(isValidRoomId(idOfBytes('!', 'example.org', 256))).toBe(false);
  });

  it('counts bytes, not characters: 128 two-byte characters are over the limit', () => {
    const id = `!${'é'.repeat(128)}:example.org`;
    expect(id.length).toBeLessThan(255);
    expect(isValidRoomId(id)).toBe(false);
    expect(isValidRoomId(idOfBytes('!', 'example.org', 255, 'é'))).toBe(true);
  });
});

describe('user IDs', () => {
  it.each(['@alice:example.org', '@a:example.org', '@alice:example.org:8448', '@alice:[::1]', '@a.b_c=d-e/f+g:example.org', '@Alice!~:example.org'])(
    'accepts %j (historical localparts included)',
    (id) => {
      expect(isValidUserId(id)).toBe(true);
    },
  );

  it.each([
    ['empty', ''],
    ['no sigil', 'alice:example.org'],
    ['room sigil', '!alice:example.org'],
    ['empty localpart', '@:example.org'],
    ['no server', '@alice'],
    ['empty server', '@alice:'],
    ['bad server', '@alice:exa_mple.org'],
    ['space in localpart', '@ali ce:example.org'],
    ['non-ASCII localpart', '@alicé:example.org'],
    ['control character', '@ali\u007fce:example.org'],
  ])('refuses %s: %j', (_what, id) => {
    expect(isValidUserId(id)).toBe(false);
  });

  it('accepts exactly 255 bytes and refuses 256', () => {
    expect(isValidUserId(idOfBytes('@', 'example.org', 255))).toBe(true);
    expect(isValidUserId(idOfBytes('@', 'example.org', 256))).toBe(false);
  });
});

describe('room aliases', () => {
  it('accepts #room:example.org and refuses malformed ones', () => {
    expect(isValidRoomAlias('#room:example.org')).toBe(true);
    expect(isValidRoomAlias('#:example.org')).toBe(false);
    expect(isValidRoomAlias('!room:example.org')).toBe(false);
    expect(isValidRoomAlias('#ro om:example.org')).toBe(false);
    expect(isValidRoomAlias(idOfBytes('#', 'example.org', 256))).toBe(false);
  });
});

describe('device IDs', () => {
  it('accepts opaque non-empty IDs up to 255 bytes', () => {
    expect(isValidDeviceId('ABCDEFGH')).toBe(true);
    expect(isValidDeviceId('x')).toBe(true);
    expect(isValidDeviceId('d'.repeat(255))).toBe(true);
  });

  it.each([
    ['empty', ''],
    ['too long', 'd'.repeat(256)],
    ['too many bytes', 'é'.repeat(128)],
    ['whitespace', 'AB CD'],
    ['newline', 'AB\nCD'],
    ['NUL', 'AB\0'],
  ])('refuses %s', (_what, id) => {
    expect(isValidDeviceId(id)).toBe(false);
  });
});

describe('peek IDs (MSC2444)', () => {
  const ROOM = '!room:example.org';

  it.each(['a', '1', '12345678', 'A.=_-9zZ', '........', '=', 'p1'])('accepts %j (1–8 chars of [0-9A-Za-z.=_-])', (id) => {
    expect(isValidPeekId(id, ROOM)).toBe(true);
  });

  it.each(['', '123456789', 'abc!', 'a b', 'é', 'a/b', 'a:b', 'a+b', '~', 'abcdefg\n'])('refuses %j', (id) => {
    expect(isValidPeekId(id, ROOM)).toBe(false);
  });

  it('accepts a peek ID equal to the room ID (Dendrite uses the room ID)', () => {
    expect(isValidPeekId(ROOM, ROOM)).toBe(true);
  });

  it("refuses another room's ID", () => {
    expect(isValidPeekId('!other:example.org', ROOM)).toBe(false);
  });
});

describe('serverOf / localpartOf', () => {
  it('split at the first colon', () => {
    expect(serverOf('@alice:example.org:8448')).toBe('example.org:8448');
    expect(localpartOf('@alice:example.org:8448')).toBe('alice');
    expect(serverOf('!room:[::1]:8448')).toBe('[::1]:8448');
    expect(localpartOf('!room:[::1]:8448')).toBe('room');
  });
});
