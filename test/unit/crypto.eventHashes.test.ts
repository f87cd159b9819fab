import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64Unpadded } from '../../src/crypto/base64.ts';
import { CanonicalJsonError, canonicalJsonBytes } from '../../src/crypto/canonicalJson.ts';
import { nodeEd25519, tweetnaclEd25519, type Ed25519 } from '../../src/crypto/ed25519.ts';
import {
  UnsupportedRoomVersionError,
  checkContentHash,
  computeContentHash,
  eventIdForPdu,
  hashAndSignPdu,
  redactPdu,
  referenceHash,
  signPdu,
  verifyPduSignature,
  withContentHash,
} from '../../src/crypto/eventHashes.ts';
import { signableJson, verifyJsonSignature } from '../../src/crypto/signJson.ts';
import { generateSigningKey, signingKeyFromSeed } from '../../src/crypto/signingKey.ts';

// ---------------------------------------------------------------------------
// Matrix spec, appendices "Cryptographic Test Vectors" > "Event Signing"
// (matrix-org/matrix-spec content/appendices.md). Texts verbatim.
const SPEC_SEED = decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
const SPEC_EVENTS = [
  {
    name: 'minimally-sized event',
    input: `{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`,
    output: `{
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {
        "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {
        "age_ts": 1000000
    }
}`,
  },
  {
    name: 'event containing redactable content',
    input: `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`,
    output: `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "hashes": {
        "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {
        "age_ts": 1000000
    }
}`,
  },
];

describe.each<Ed25519>([nodeEd25519, tweetnaclEd25519])('event signing with $name: spec test vectors', (ed) => {
  const key = signingKeyFromSeed('1', SPEC_SEED, ed);

  it.each(SPEC_EVENTS)('$name', ({ input, output }) => {
    const event = JSON.parse(input) as Record<string, unknown>;
    const expected = JSON.parse(output) as Record<string, unknown>;
    expect(computeContentHash(event)).toBe((expected['hashes'] as { sha256: string }).sha256);
    expect(hashAndSignPdu(event, 'domain', key, ed)).toEqual(expected);
    expect(signPdu(withContentHash(event), 'domain', key, ed)).toEqual(expected);
    expect(checkContentHash(expected)).toBe(true);
    expect(verifyPduSignature(expected, 'domain', 'ed25519:1', key.publicKey, ed)).toBe(true);
  });
});

// ---------------------------------------------------------------------------
// Event ID vectors from matrix-org/gomatrixserverlib eventversion_test.go
// (TestEventIDForRoomVersionV3 / V4): a room version 5 create event from jki.re.
const GMSL_CREATE_EVENT = `{"auth_events": [], "prev_events": [], "type": "m.room.create", "room_id": "!uXDCzlYgCTHtiWCkEx:jki.re", "sender": "@erikj:jki.re", "content": {"room_version": "5", "predecessor": {"room_id": "!gdRMqOrTFdOCYHNwOo:half-shot.uk", "event_id": "$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI"}, "creator": "@erikj:jki.re"}, "depth": 1, "prev_state": [], "state_key": "", "origin": "jki.re", "origin_server_ts": 1560284621137, "hashes": {"sha256": "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"}, "signatures": {"jki.re": {"ed25519:auto": "O4IyFfF2PPtGp5uaDm8t57dZbdh8vc8Q64LgCwvzYRVItAMI0uisfiAFaxkVT7MRpzh6N2QNN5NMRXZKmgPYDA"}}, "unsigned": {"age": 1321650}}`;

describe('event IDs (reference hashes)', () => {
  it("matches gomatrixserverlib's v4 and v3 event IDs for a real event", () => {
    const event = JSON.parse(GMSL_CREATE_EVENT) as Record<string, unknown>;
    expect(eventIdForPdu(event, '4')).toBe('$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438');
    expect(eventIdForPdu(event, '5')).toBe('$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438');
    expect(eventIdForPdu(event, '3')).toBe('$RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438');
    // The create event redacts identically in every room version up to 10.
    expect(eventIdForPdu(event)).toBe('$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438');
    expect(encodeBase64Unpadded(referenceHash(event, '4'))).toBe('RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438');
  });

  it('accepts the content hash Synapse computed for that event', () => {
    expect(checkContentHash(JSON.parse(GMSL_CREATE_EVENT) as object)).toBe(true);
  });

  it('has no event ID derivation for room versions 1 and 2, nor redaction rules past 10', () => {
    const event = JSON.parse(GMSL_CREATE_EVENT) as object;
    expect(() => eventIdForPdu(event, '1')).toThrow(UnsupportedRoomVersionError);
    expect(() => eventIdForPdu(event, '2')).toThrow(UnsupportedRoomVersionError);
    expect(() => eventIdForPdu(event, '11')).toThrow(UnsupportedRoomVersionError);
  });

  const pdu = withContentHash({
    auth_events: ['$create', '$power', '$member'],
    content: { body: 'hello', msgtype: 'm.text' },
    depth: 12,
    origin_server_ts: 1700000000000,
    prev_events: ['$prev'],
    room_id: '!room:peekd.test',
    sender: '@alice:peekd.test',
    type: 'm.room.message',
  });

  it('is deterministic: key order, signatures, unsigned and age_ts do not matter', () => {
    const id = eventIdForPdu(pdu);
    expect(id).toMatch(/^\$[A-Za-z0-9_-]{43}$/);
    const reordered = Object.fromEntries(Object.entries(pdu).reverse());
    expect(eventIdForPdu(reordered)).toBe(id);
    expect(eventIdForPdu({ ...pdu, unsigned: { age: 5 }, age_ts: 7 })).toBe(id);
    expect(eventIdForPdu(signPdu(pdu, 'peekd.test', generateSigningKey()))).toBe(id);
    expect(eventIdForPdu(structuredClone(pdu))).toBe(id);
  });

  it('changes when a protected field or the content hash changes', () => {
    const id = eventIdForPdu(pdu);
    expect(eventIdForPdu({ ...pdu, depth: 13 })).not.toBe(id);
    expect(eventIdForPdu({ ...pdu, prev_events: ['$other'] })).not.toBe(id);
    expect(eventIdForPdu(withContentHash({ ...pdu, content: { body: 'bye', msgtype: 'm.text' } }))).not.toBe(id);
    // Without a new content hash, a redacted-away content change does not alter the ID.
    expect(eventIdForPdu({ ...pdu, content: { body: 'bye' } })).toBe(id);
  });
});

// ---------------------------------------------------------------------------
describe('content hashes', () => {
  const pdu = withContentHash({
    auth_events: [],
    content: { body: 'hello' },
    depth: 1,
    origin_server_ts: 1,
    prev_events: [],
    room_id: '!r:x',
    sender: '@a:x',
    type: 'm.room.message',
  });

  it('checks out, and ignores unsigned, signatures and hashes themselves', () => {
    expect(checkContentHash(pdu)).toBe(true);
    expect(checkContentHash({ ...pdu, unsigned: { age: 1 }, signatures: { x: { y: 'z' } } })).toBe(true);
    expect(computeContentHash({ ...pdu, hashes: { sha256: 'different', other: 'x' } })).toBe(pdu.hashes.sha256);
  });

  it('fails after tampering', () => {
    expect(checkContentHash({ ...pdu, content: { body: 'hellO' } })).toBe(false);
    expect(checkContentHash({ ...pdu, depth: 2 })).toBe(false);
    expect(checkContentHash({ ...pdu, extra: true })).toBe(false);
    expect(checkContentHash({ ...pdu, hashes: { sha256: `${pdu.hashes.sha256.slice(0, -1)}A` } })).toBe(false);
  });

  it('returns false for missing or malformed hashes, and for events with no canonical form', () => {
    const { hashes: _h, ...unhashed } = pdu;
    expect(checkContentHash(unhashed)).toBe(false);
    expect(checkContentHash({ ...pdu, hashes: 'x' })).toBe(false);
    expect(checkContentHash({ ...pdu, hashes: { sha256: 5 } })).toBe(false);
    expect(checkContentHash({ ...pdu, hashes: { sha256: '!!!' } })).toBe(false);
    expect(checkContentHash({ ...pdu, content: { n: 0.5 } })).toBe(false);
  });

  it('accepts a padded hash', () => {
    expect(checkContentHash({ ...pdu, hashes: { sha256: `${pdu.hashes.sha256}=` } })).toBe(true);
  });

  it('withContentHash does not mutate its input', () => {
    const input = { type: 'x', content: {} };
    const out = withContentHash(input);
    expect(input).toEqual({ type: 'x', content: {} });
    expect(out.hashes.sha256).toHaveLength(43);
  });
});

// ---------------------------------------------------------------------------
describe('redaction', () => {
  const ALL = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'];
  const redactContent = (type: string, content: Record<string, unknown>, v: string) => redactPdu({ type, content }, v)['content'];

  // Top-level keys from the spec (rooms v1-v10 "Redactions"; origin, membership and
  // prev_state are only dropped from v11), adapted from matrix-org/synapse
  // tests/events/test_utils.py PruneEventTestCase.test_basic_keys.
  it.each(ALL)('v%s keeps exactly the protected top-level keys', (v) => {
    const event = {
      event_id: '$3:domain',
      type: 'A',
      room_id: '!1:domain',
      sender: '@2:domain',
      state_key: 'B',
      content: { other_key: 'foo' },
      hashes: 'hashes',
      signatures: { domain: { 'algo:1': 'sigs' } },
      depth: 4,
      prev_events: 'prev_events',
      prev_state: 'prev_state',
      auth_events: 'auth_events',
      origin: 'domain',
      origin_server_ts: 1234,
      membership: 'join',
      other_key: 'foo',
      unsigned: { age_ts: 20 },
      age_ts: 20,
    };
    expect(redactPdu(event, v)).toEqual({
      event_id: '$3:domain',
      type: 'A',
      room_id: '!1:domain',
      sender: '@2:domain',
      state_key: 'B',
      hashes: 'hashes',
      depth: 4,
      prev_events: 'prev_events',
      prev_state: 'prev_state',
      auth_events: 'auth_events',
      origin: 'domain',
      origin_server_ts: 1234,
      membership: 'join',
      content: {},
      signatures: { domain: { 'algo:1': 'sigs' } },
    });
  });

  it('always produces a content object', () => {
    expect(redactPdu({ type: 'A' })).toEqual({ type: 'A', content: {} });
    expect(redactPdu({ type: 'A', content: 'nonsense' })).toEqual({ type: 'A', content: {} });
  });

  it.each(ALL)('v%s: m.room.create keeps only creator', (v) => {
    expect(redactContent('m.room.create', { creator: '@2:domain', room_version: '5', other_key: 'foo' }, v)).toEqual({
      creator: '@2:domain',
    });
  });

  it.each(ALL)('v%s: m.room.power_levels keeps ban..users_default but not invite', (v) => {
    const content = {
      ban: 1,
      events: { 'm.room.name': 100 },
      events_default: 2,
      invite: 3,
      kick: 4,
      redact: 5,
      state_default: 6,
      users: { '@admin:domain': 100 },
      users_default: 7,
      notifications: { room: 50 },
      other_key: 8,
    };
    expect(redactContent('m.room.power_levels', content, v)).toEqual({
      ban: 1,
      events: { 'm.room.name': 100 },
      events_default: 2,
      kick: 4,
      redact: 5,
      state_default: 6,
      users: { '@admin:domain': 100 },
      users_default: 7,
    });
  });

  it.each(ALL)('v%s: m.room.history_visibility keeps history_visibility', (v) => {
    expect(redactContent('m.room.history_visibility', { history_visibility: 'shared', other_key: 'foo' }, v)).toEqual({
      history_visibility: 'shared',
    });
  });

  it.each(ALL)('v%s: m.room.member keeps membership, and join_authorised_via_users_server from v9', (v) => {
    const content = {
      membership: 'join',
      join_authorised_via_users_server: '@user:domain',
      displayname: 'Alice',
      third_party_invite: { signed: { x: 1 } },
    };
    const expected: Record<string, unknown> = { membership: 'join' };
    if (Number(v) >= 9) expected['join_authorised_via_users_server'] = '@user:domain';
    expect(redactContent('m.room.member', content, v)).toEqual(expected);
  });

  it.each(ALL)('v%s: m.room.join_rules keeps join_rule, and allow from v8', (v) => {
    const allow = [{ type: 'm.room_membership', room_id: '!space:domain' }];
    const expected: Record<string, unknown> = { join_rule: 'restricted' };
    if (Number(v) >= 8) expected['allow'] = allow;
    expect(redactContent('m.room.join_rules', { join_rule: 'restricted', allow, other_key: 'stripped' }, v)).toEqual(expected);
  });

  it.each(ALL)('v%s: m.room.aliases keeps aliases only up to v5', (v) => {
    expect(redactContent('m.room.aliases', { aliases: ['#test:domain'], other: 1 }, v)).toEqual(Number(v) <= 5 ? { aliases: ['#test:domain'] } : {});
  });

  it.each(ALL)('v%s: m.room.redaction and other types keep no content', (v) => {
    expect(redactContent('m.room.redaction', { redacts: '$x', reason: 'spam' }, v)).toEqual({});
    expect(redactContent('m.room.message', { body: 'hi', msgtype: 'm.text' }, v)).toEqual({});
    expect(redactContent('m.room.name', { name: 'A room' }, v)).toEqual({});
  });

  it('defaults to room version 10', () => {
    const content = { membership: 'join', join_authorised_via_users_server: '@u:d' };
    expect(redactPdu({ type: 'm.room.member', content, origin: 'd' })).toEqual({
      type: 'm.room.member',
      content,
      origin: 'd',
    });
  });

  it('returns a deep copy and leaves the input alone', () => {
    const users = { '@a:x': 100 };
    const input = { type: 'm.room.power_levels', content: { users, body: 'x' }, unsigned: { a: 1 } };
    const snapshot = structuredClone(input);
    const out = redactPdu(input);
    expect(input).toEqual(snapshot);
    (out['content'] as { users: Record<string, number> }).users['@b:x'] = 1;
    expect(users).toEqual({ '@a:x': 100 });
  });

  it('ignores inherited properties', () => {
    const proto = { membership: 'join' };
    const content = Object.create(proto) as Record<string, unknown>;
    expect(redactPdu({ type: 'm.room.member', content })['content']).toEqual({});
  });

  it.each(['11', '12', '0', '', 'v10', 'org.matrix.msc2176'])('rejects room version %j', (v) => {
    expect(() => redactPdu({ type: 'A' }, v)).toThrow(UnsupportedRoomVersionError);
  });
});

// ---------------------------------------------------------------------------
describe('signPdu / verifyPduSignature', () => {
  const key = generateSigningKey('a_Test');
  const member = withContentHash({
    auth_events: ['$create', '$power'],
    content: { membership: 'join', displayname: 'Alice', avatar_url: 'mxc://x/y' },
    depth: 3,
    origin_server_ts: 1700000000000,
    prev_events: ['$prev'],
    room_id: '!room:peekd.test',
    sender: '@alice:peekd.test',
    state_key: '@alice:peekd.test',
    type: 'm.room.member',
  });
  const signed = signPdu(member, 'peekd.test', key);

  it('round-trips, and does not mutate the input', () => {
    expect(member).not.toHaveProperty('signatures');
    expect(signed.content).toEqual(member.content);
    expect(verifyPduSignature(signed, 'peekd.test', key.keyId, key.publicKey)).toBe(true);
    // ... and the other implementation agrees.
    expect(verifyPduSignature(signed, 'peekd.test', key.keyId, key.publicKey, tweetnaclEd25519)).toBe(true);
  });

  it('signature still verifies after changing redacted-away content, but the content hash catches it', () => {
    const tampered = { ...signed, content: { ...signed.content, displayname: 'Mallory' } };
    expect(verifyPduSignature(tampered, 'peekd.test', key.keyId, key.publicKey)).toBe(true);
    expect(checkContentHash(tampered)).toBe(false);
    expect(checkContentHash(signed)).toBe(true);
  });

  it('fails after changing anything the redacted form keeps', () => {
    const cases: Record<string, unknown>[] = [
      { ...signed, content: { ...signed.content, membership: 'leave' } },
      { ...signed, origin_server_ts: signed.origin_server_ts + 1 },
      { ...signed, state_key: '@mallory:peekd.test' },
      { ...signed, prev_events: [] },
      { ...signed, hashes: withContentHash({ ...member, content: { membership: 'join' } }).hashes },
      { ...signed, origin: 'peekd.test' }, // origin is protected up to v10
    ];
    for (const c of cases) expect(verifyPduSignature(c, 'peekd.test', key.keyId, key.publicKey)).toBe(false);
  });

  it('is unaffected by unsigned data and further signatures', () => {
    const other = generateSigningKey('a_Othr');
    const cosigned = signPdu({ ...signed, unsigned: { age: 10 } }, 'other.test', other);
    expect(Object.keys(cosigned.signatures).sort()).toEqual(['other.test', 'peekd.test']);
    expect(verifyPduSignature(cosigned, 'peekd.test', key.keyId, key.publicKey)).toBe(true);
    expect(verifyPduSignature(cosigned, 'other.test', other.keyId, other.publicKey)).toBe(true);
    expect(cosigned.unsigned).toEqual({ age: 10 });
  });

  it('returns false for a missing signature, the wrong key, or an unsupported room version', () => {
    expect(verifyPduSignature(member, 'peekd.test', key.keyId, key.publicKey)).toBe(false);
    expect(verifyPduSignature(signed, 'peekd.test', key.keyId, generateSigningKey().publicKey)).toBe(false);
    expect(verifyPduSignature(signed, 'peekd.test', 'ed25519:nope', key.publicKey)).toBe(false);
    expect(verifyPduSignature(signed, 'peekd.test', key.keyId, key.publicKey, undefined, '11')).toBe(false);
  });

  it('honours the room version: v8 vs v9 member redaction changes what is signed', () => {
    const restrictedJoin = withContentHash({ ...member, content: { membership: 'join', join_authorised_via_users_server: '@bob:peekd.test' } });
    const v8 = signPdu(restrictedJoin, 'peekd.test', key, undefined, '8');
    const v9 = signPdu(restrictedJoin, 'peekd.test', key, undefined, '9');
    expect(verifyPduSignature(v8, 'peekd.test', key.keyId, key.publicKey, undefined, '8')).toBe(true);
    expect(verifyPduSignature(v9, 'peekd.test', key.keyId, key.publicKey, undefined, '9')).toBe(true);
    expect(verifyPduSignature(v8, 'peekd.test', key.keyId, key.publicKey, undefined, '9')).toBe(false);
    const moved = { ...v9, content: { ...v9.content, join_authorised_via_users_server: '@eve:peekd.test' } };
    expect(verifyPduSignature(moved, 'peekd.test', key.keyId, key.publicKey, undefined, '9')).toBe(false);
  });
});

// ---------------------------------------------------------------------------
/**
 * verifyPduSignature and referenceHash write the redacted event's canonical JSON straight
 * from the PDU's fields; "the long way" is the algorithm as the spec states it, built from
 * redactPdu (a deep copy) and canonical JSON. Both must decide every event alike.
 */
describe('verifyPduSignature / referenceHash: the direct path agrees with the long way', () => {
  const key = generateSigningKey('a_Long');
  const other = generateSigningKey('a_Othr');

  const longVerify = (pdu: object, server: string, keyId: string, publicKey: Uint8Array, v = '10'): boolean => {
    try {
      return verifyJsonSignature(redactPdu(pdu, v), server, keyId, publicKey);
    } catch {
      return false;
    }
  };
  const longReferenceHash = (pdu: object, v = '10'): Uint8Array => {
    const { signatures: _s, unsigned: _u, age_ts: _a, ...rest } = redactPdu(pdu, v);
    return new Uint8Array(createHash('sha256').update(canonicalJsonBytes(rest)).digest());
  };
  const expectSameVerdict = (pdu: object, expected: boolean, v = '10'): void => {
    expect(longVerify(pdu, 'peekd.test', key.keyId, key.publicKey, v)).toBe(expected);
    expect(verifyPduSignature(pdu, 'peekd.test', key.keyId, key.publicKey, undefined, v)).toBe(expected);
  };

  const base = {
    auth_events: ['$create', '$power'],
    depth: 7,
    event_id: '$legacy:peekd.test',
    membership: 'join',
    origin: 'peekd.test',
    origin_server_ts: 1700000000000,
    prev_events: ['$prev'],
    prev_state: [],
    room_id: '!room:peekd.test',
    sender: '@alice:peekd.test',
    unsigned: { age_ts: 5, 'x\u0000': [1.5] },
    age_ts: 9,
    extra: { ignored: 0.5 }, // not kept by redaction, and not canonical: must not matter
    hashes: { sha256: 'not checked here' },
  };
  const contents: [string, Record<string, unknown>][] = [
    ['m.room.message', { msgtype: 'm.text', body: 'h\u00e9llo "\\" \n \u{1F600}' }],
    ['m.room.member', { membership: 'join', join_authorised_via_users_server: '@bob:peekd.test', displayname: 'A' }],
    ['m.room.create', { creator: '@alice:peekd.test', room_version: '10' }],
    ['m.room.join_rules', { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!x:y' }] }],
    [
      'm.room.power_levels',
      {
        ban: 50,
        events: { 'm.room.name': 50 },
        events_default: 0,
        kick: 50,
        redact: 50,
        state_default: 50,
        users: { '@alice:peekd.test': 100, '\u{1F600}': 1, '\uFB01': 2 },
        users_default: 0,
        notifications: { room: 50 },
      },
    ],
    ['m.room.history_visibility', { history_visibility: 'world_readable' }],
    ['m.room.aliases', { aliases: ['#a:peekd.test'] }],
  ];

  it('for every redaction rule and room version 1-10: same verdicts, same reference hash, same event ID', () => {
    for (const version of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']) {
      for (const [type, content] of contents) {
        const event = { ...base, type, state_key: type === 'm.room.message' ? undefined : '', content };
        if (event.state_key === undefined) delete (event as { state_key?: string }).state_key;
        const signed = signPdu(signPdu(event, 'other.test', other, undefined, version), 'peekd.test', key, undefined, version);
        const label = `${type} v${version}`;
        expect(verifyPduSignature(signed, 'peekd.test', key.keyId, key.publicKey, undefined, version), label).toBe(true);
        expect(verifyPduSignature(signed, 'other.test', other.keyId, other.publicKey, undefined, version), label).toBe(true);
        expect(referenceHash(signed, version), label).toEqual(longReferenceHash(signed, version));
        if (Number(version) >= 3) {
          const hash = longReferenceHash(signed, version);
          const encoded = Buffer.from(hash)
            .toString(version === '3' ? 'base64' : 'base64url')
            .replace(/=+$/, '');
          expect(eventIdForPdu(signed, version), label).toBe(`$${encoded}`);
        }
        // Every kept field is covered: change one and both ways refuse.
        for (const field of ['auth_events', 'depth', 'event_id', 'membership', 'origin', 'origin_server_ts', 'prev_events', 'prev_state', 'room_id', 'sender', 'hashes']) {
          expectSameVerdict({ ...signed, [field]: 'changed' }, false, version);
        }
      }
    }
  });

  it('a PDU with a null prototype verifies; an inherited `signatures` does not count', () => {
    const signed = signPdu({ ...base, type: 'm.room.message', content: { body: 'x' } }, 'peekd.test', key);
    expectSameVerdict(Object.assign(Object.create(null) as object, signed), true);
    const { signatures, ...unsignedPart } = signed;
    expectSameVerdict(Object.assign(Object.create({ signatures }) as object, unsignedPart), false);
  });

  it('falls back to the long way for fields that are not plain JSON data, and decides as it does', () => {
    const powerLevels = { ...base, type: 'm.room.power_levels', state_key: '', content: { users: { '@alice:peekd.test': 100 }, ban: 50 } };
    const signed = signPdu(powerLevels, 'peekd.test', key);
    class Users {
      '@alice:peekd.test' = 100;
    }
    let deep: unknown = { 'm.room.name': 50 };
    for (let i = 0; i < 200; i++) deep = { nested: deep };
    const deeplySigned = signPdu({ ...powerLevels, content: { ...powerLevels.content, events: deep } }, 'peekd.test', key);
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;

    // A class instance: redactPdu's structuredClone makes a plain object of it, which verifies.
    expectSameVerdict({ ...signed, content: { ...signed.content, users: new Users() } }, true);
    // Nested deeper than the fast writer goes.
    expectSameVerdict(deeplySigned, true);
    expect(referenceHash(deeplySigned)).toEqual(longReferenceHash(deeplySigned));
    // Other servers' signatures are not signed, but must survive the deep copy.
    expectSameVerdict({ ...signed, signatures: { ...signed.signatures, 'x.test': { when: new Date(0) } } }, true);
    expectSameVerdict({ ...signed, signatures: { ...signed.signatures, 'x.test': { f: () => 1 } } }, false);
    // Not canonical JSON in a kept field.
    expectSameVerdict({ ...signed, depth: 7.5 }, false);
    expectSameVerdict({ ...signed, depth: 2 ** 53 }, false);
    expectSameVerdict({ ...signed, depth: undefined }, false);
    expectSameVerdict({ ...signed, depth: 7n }, false);
    expectSameVerdict({ ...signed, room_id: '!\ud800:peekd.test' }, false);
    expectSameVerdict({ ...signed, content: { ...signed.content, ban: cyclic } }, false);
    expect(() => referenceHash({ ...signed, content: { ...signed.content, ban: cyclic } })).toThrow(CanonicalJsonError);
    expect(() => longReferenceHash({ ...signed, content: { ...signed.content, ban: cyclic } })).toThrow(CanonicalJsonError);
  });

  it("signs exactly the bytes the long way signs (the spec vectors' redacted forms)", () => {
    for (const { output } of SPEC_EVENTS) {
      const event = JSON.parse(output) as Record<string, unknown>;
      const specKey = signingKeyFromSeed('1', SPEC_SEED);
      expect(verifyPduSignature(event, 'domain', 'ed25519:1', specKey.publicKey)).toBe(true);
      expect(
        nodeEd25519.verify(
          specKey.publicKey,
          canonicalJsonBytes(signableJson(redactPdu(event))),
          decodeBase64((event['signatures'] as Record<string, Record<string, string>>)['domain']!['ed25519:1']!),
        ),
      ).toBe(true);
    }
  });
});
