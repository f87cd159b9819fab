import { describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64Unpadded } from '../../src/crypto/base64.ts';
import { canonicalJsonBytes } from '../../src/crypto/canonicalJson.ts';
import { nodeEd25519, tweetnaclEd25519, type Ed25519 } from '../../src/crypto/ed25519.ts';
import { generateSigningKey, signingKeyFromSeed } from '../../src/crypto/signingKey.ts';
import { getSignature, signJson, verifyJsonSignature } from '../../src/crypto/signJson.ts';

// Matrix spec, appendices "Cryptographic Test Vectors": seed, SERVER_NAME and KEY_ID,
// and the two "JSON Signing" examples (matrix-org/matrix-spec content/appendices.md).
const SPEC_SEED = decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
const SERVER = 'domain';
const KEY_ID = 'ed25519:1';
const SPEC_VECTORS: { name: string; input: string; output: string }[] = [
  {
    name: 'empty object',
    input: '{}',
    output: `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`,
  },
  {
    name: 'object with data values',
    input: `{
    "one": 1,
    "two": "Two"
}`,
    output: `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`,
  },
];

describe.each<Ed25519>([nodeEd25519, tweetnaclEd25519])('signJson with $name: spec test vectors', (ed) => {
  const key = signingKeyFromSeed('1', SPEC_SEED, ed);

  it.each(SPEC_VECTORS)('$name', ({ input, output }) => {
    const signed = signJson(JSON.parse(input) as object, SERVER, key, ed);
    expect(signed).toEqual(JSON.parse(output));
    expect(verifyJsonSignature(signed, SERVER, KEY_ID, key.publicKey, ed)).toBe(true);
    // And the spec's expected output verifies as-is.
    expect(verifyJsonSignature(JSON.parse(output) as object, SERVER, KEY_ID, key.publicKey, ed)).toBe(true);
  });
});

describe('signJson', () => {
  const key = signingKeyFromSeed('1', SPEC_SEED);

  it('does not cover unsigned or signatures, keeps unsigned, and does not mutate the input', () => {
    const input = {
      name: 'example.org',
      unsigned: { age_ts: 922834800000 },
      signatures: { 'other.example': { 'ed25519:x': 'c2lnbmF0dXJl' } },
    };
    const snapshot = structuredClone(input);
    const signed = signJson(input, 'example.org', key);
    expect(input).toEqual(snapshot);
    expect(signed.unsigned).toEqual({ age_ts: 922834800000 });
    expect(signed.signatures).toEqual({
      'other.example': { 'ed25519:x': 'c2lnbmF0dXJl' },
      'example.org': { 'ed25519:1': expect.any(String) },
    });
    // The signature is over the canonical JSON of {name} alone: check it with the other implementation.
    const sig = decodeBase64(signed.signatures['example.org']!['ed25519:1']!);
    expect(tweetnaclEd25519.verify(key.publicKey, canonicalJsonBytes({ name: 'example.org' }), sig)).toBe(true);
    // Changing unsigned or adding signatures does not break it.
    const changed = { ...signed, unsigned: { age_ts: 1 }, signatures: { ...signed.signatures, x: { y: 'z' } } };
    expect(verifyJsonSignature(changed, 'example.org', 'ed25519:1', key.publicKey)).toBe(true);
  });

  it('merges a second signature by the same server with another key, without sharing nested objects', () => {
    const other = generateSigningKey('a_2nd');
    const once = signJson({ a: 1 }, 'srv', key);
    const twice = signJson(once, 'srv', other);
    expect(Object.keys(twice.signatures['srv']!).sort()).toEqual(['ed25519:1', 'ed25519:a_2nd']);
    expect(Object.keys(once.signatures['srv']!)).toEqual(['ed25519:1']);
    expect(verifyJsonSignature(twice, 'srv', 'ed25519:1', key.publicKey)).toBe(true);
    expect(verifyJsonSignature(twice, 'srv', 'ed25519:a_2nd', other.publicKey)).toBe(true);
  });

  it('replaces an older signature by the same key', () => {
    const stale = { a: 1, signatures: { srv: { 'ed25519:1': 'AAAA' } } };
    const signed = signJson(stale, 'srv', key);
    expect(signed.signatures['srv']!['ed25519:1']).not.toBe('AAAA');
    expect(verifyJsonSignature(signed, 'srv', 'ed25519:1', key.publicKey)).toBe(true);
  });

  it('throws on objects that have no canonical form or malformed signatures', () => {
    expect(() => signJson({ x: 1.5 }, 'srv', key)).toThrow();
    expect(() => signJson({ signatures: 'nope' }, 'srv', key)).toThrow(TypeError);
  });
});

describe('verifyJsonSignature', () => {
  const key = signingKeyFromSeed('1', SPEC_SEED);
  const signed = signJson({ one: 1, two: 'Two', unsigned: { u: 1 } }, SERVER, key);
  const sig = signed.signatures[SERVER]![KEY_ID]!;

  it('fails after tampering with a signed field', () => {
    expect(verifyJsonSignature({ ...signed, one: 2 }, SERVER, KEY_ID, key.publicKey)).toBe(false);
    expect(verifyJsonSignature({ ...signed, three: 3 }, SERVER, KEY_ID, key.publicKey)).toBe(false);
    const { two: _two, ...withoutTwo } = signed;
    expect(verifyJsonSignature(withoutTwo, SERVER, KEY_ID, key.publicKey)).toBe(false);
  });

  it('fails for the wrong key, server or key ID', () => {
    expect(verifyJsonSignature(signed, SERVER, KEY_ID, generateSigningKey().publicKey)).toBe(false);
    expect(verifyJsonSignature(signed, 'other', KEY_ID, key.publicKey)).toBe(false);
    expect(verifyJsonSignature(signed, SERVER, 'ed25519:2', key.publicKey)).toBe(false);
  });

  it.each([
    ['no signatures', { one: 1, two: 'Two' }],
    ['signatures not an object', { one: 1, two: 'Two', signatures: 'x' }],
    ['server entry not an object', { one: 1, two: 'Two', signatures: { domain: 'x' } }],
    ['signature not a string', { one: 1, two: 'Two', signatures: { domain: { [KEY_ID]: 5 } } }],
    ['malformed base64', { one: 1, two: 'Two', signatures: { domain: { [KEY_ID]: `${sig.slice(0, -2)}!!` } } }],
    ['truncated signature', { one: 1, two: 'Two', signatures: { domain: { [KEY_ID]: sig.slice(0, -4) } } }],
    ['empty signature', { one: 1, two: 'Two', signatures: { domain: { [KEY_ID]: '' } } }],
    ['a float in the body', { one: 1.5, two: 'Two', signatures: { domain: { [KEY_ID]: sig } } }],
    ['empty signatures object', { one: 1, two: 'Two', signatures: {} }],
  ])('returns false (never throws) for %s', (_name, obj) => {
    expect(verifyJsonSignature(obj, SERVER, KEY_ID, key.publicKey)).toBe(false);
  });

  it('does not look up inherited properties such as "constructor" or "__proto__"', () => {
    expect(getSignature({ signatures: {} }, 'constructor', 'name')).toBeUndefined();
    expect(getSignature({ signatures: {} }, '__proto__', 'x')).toBeUndefined();
    expect(verifyJsonSignature({ signatures: {} }, 'constructor', 'name', key.publicKey)).toBe(false);
  });

  it('accepts padded base64 signatures', () => {
    const padded = { ...signed, signatures: { [SERVER]: { [KEY_ID]: `${sig}==` } } };
    expect(encodeBase64Unpadded(decodeBase64(`${sig}==`))).toBe(sig);
    expect(verifyJsonSignature(padded, SERVER, KEY_ID, key.publicKey)).toBe(true);
  });
});
