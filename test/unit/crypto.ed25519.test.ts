import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NODE_ED25519_CACHE_LIMITS, clearNodeEd25519Caches, defaultEd25519, nodeEd25519, nodeEd25519CacheSizes, tweetnaclEd25519, type Ed25519 } from '../../src/crypto/ed25519.ts';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Deterministic pseudo-random bytes (sha256 in counter mode), so failures are reproducible. */
function drbg(label: string): (n: number) => Uint8Array {
  let counter = 0;
  let pool = Buffer.alloc(0);
  return (n: number): Uint8Array => {
    while (pool.length < n) {
      pool = Buffer.concat([pool, createHash('sha256').update(`${label}/${counter++}`).digest()]);
    }
    const out = new Uint8Array(pool.subarray(0, n));
    pool = pool.subarray(n);
    return out;
  };
}

// RFC 8032 section 7.1, TEST 1-3 (seed, public key for TEST 1, message, signature).
const RFC8032 = [
  {
    name: 'TEST 1',
    seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    publicKey: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    message: '',
    signature: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2',
    seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    message: '72',
    signature: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3',
    seed: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    message: 'af82',
    signature: '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
];

const IMPLS: Ed25519[] = [nodeEd25519, tweetnaclEd25519];

describe.each(IMPLS)('ed25519 $name: RFC 8032 vectors', (ed) => {
  it.each(RFC8032)('$name', (v) => {
    const pk = ed.publicKeyFromSeed(hex(v.seed));
    if (v.publicKey) expect(toHex(pk)).toBe(v.publicKey);
    expect(pk).toHaveLength(32);
    const sig = ed.sign(hex(v.seed), hex(v.message));
    expect(toHex(sig)).toBe(v.signature);
    expect(ed.verify(pk, hex(v.message), hex(v.signature))).toBe(true);
  });

  it('returns plain Uint8Arrays', () => {
    const seed = hex(RFC8032[0]!.seed);
    expect(Object.getPrototypeOf(ed.publicKeyFromSeed(seed))).toBe(Uint8Array.prototype);
    expect(Object.getPrototypeOf(ed.sign(seed, new Uint8Array(0)))).toBe(Uint8Array.prototype);
  });

  it('throws on a bad seed when signing, but verify never throws', () => {
    expect(() => ed.sign(new Uint8Array(31), new Uint8Array(0))).toThrow(TypeError);
    expect(() => ed.publicKeyFromSeed(new Uint8Array(33))).toThrow(TypeError);
    const v = RFC8032[0]!;
    const bad: unknown[] = [undefined, null, 'abc', [1, 2, 3], new Uint8Array(0), new Uint8Array(31), new Uint8Array(65)];
    for (const b of bad) {
      expect(ed.verify(b as Uint8Array, hex(v.message), hex(v.signature))).toBe(false);
      // (The empty array is a valid message here: TEST 1 signs the empty message.)
      if (!(b instanceof Uint8Array && b.length === 0)) {
        expect(ed.verify(hex(v.publicKey!), b as Uint8Array, hex(v.signature))).toBe(false);
      }
      expect(ed.verify(hex(v.publicKey!), hex(v.message), b as Uint8Array)).toBe(false);
    }
  });
});

describe('ed25519: node and tweetnacl agree (differential)', () => {
  it('defaultEd25519 is the node implementation', () => {
    expect(defaultEd25519).toBe(nodeEd25519);
  });

  it('same public keys, same signatures and same verdicts for 256 random keys and messages', () => {
    // tweetnacl takes several ms per operation on a slow CI box, so each iteration checks
    // the valid signature plus one of the tamper kinds (rotating), and all cheap length cases.
    const ITERATIONS = 256;
    const rand = drbg('ed25519-differential');
    const verdicts = { valid: 0, invalid: 0 };
    const tamperCounts = new Map<string, number>();
    const check = (pk: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean => {
      const a = nodeEd25519.verify(pk, msg, sig);
      const b = tweetnaclEd25519.verify(pk, msg, sig);
      if (a !== b) {
        expect.fail(`verdicts differ (node ${a}, tweetnacl ${b}) for pk=${toHex(pk)} msg=${toHex(msg)} sig=${toHex(sig)}`);
      }
      verdicts[a ? 'valid' : 'invalid']++;
      return a;
    };

    for (let i = 0; i < ITERATIONS; i++) {
      const seed = rand(32);
      const msg = rand((rand(1)[0]! * 7) % 1500); // 0..1499 bytes, sometimes empty

      const pk = nodeEd25519.publicKeyFromSeed(seed);
      expect(toHex(tweetnaclEd25519.publicKeyFromSeed(seed))).toBe(toHex(pk));
      const sig = nodeEd25519.sign(seed, msg);
      expect(toHex(tweetnaclEd25519.sign(seed, msg))).toBe(toHex(sig));

      expect(check(pk, msg, sig)).toBe(true);

      const tampers: [string, () => [Uint8Array, Uint8Array, Uint8Array]][] = [
        [
          'message bit flip',
          () => {
            const m2 = msg.length > 0 ? new Uint8Array(msg) : Uint8Array.from([0]);
            if (msg.length > 0) m2[i % msg.length]! ^= 1 << (i % 8);
            return [pk, m2, sig];
          },
        ],
        ['message extended', () => [pk, Uint8Array.from([...msg, i & 0xff]), sig]],
        [
          'R bit flip',
          () => {
            const s2 = new Uint8Array(sig);
            s2[i % 32]! ^= 1 << (i % 8);
            return [pk, msg, s2];
          },
        ],
        [
          'S bit flip',
          () => {
            const s2 = new Uint8Array(sig);
            s2[32 + (i % 31)]! ^= 1 << (i % 8);
            return [pk, msg, s2];
          },
        ],
        ['wrong key', () => [nodeEd25519.publicKeyFromSeed(rand(32)), msg, sig]],
        ['garbage key', () => [rand(32), msg, sig]],
        ['garbage signature', () => [pk, msg, rand(64)]],
      ];
      const [kind, make] = tampers[i % tampers.length]!;
      tamperCounts.set(kind, (tamperCounts.get(kind) ?? 0) + 1);
      expect(check(...make()), kind).toBe(false);

      // Wrong lengths (no curve arithmetic, so all of them every time).
      expect(check(pk.subarray(0, 31), msg, sig)).toBe(false);
      expect(check(Uint8Array.from([...pk, 0]), msg, sig)).toBe(false);
      expect(check(pk, msg, sig.subarray(0, 63))).toBe(false);
      expect(check(pk, msg, Uint8Array.from([...sig, 0]))).toBe(false);
      expect(check(new Uint8Array(0), msg, new Uint8Array(0))).toBe(false);
    }
    expect(verdicts.valid).toBe(ITERATIONS);
    expect(verdicts.invalid).toBe(ITERATIONS * 6);
    for (const count of tamperCounts.values()) expect(count).toBeGreaterThanOrEqual(36);
  });

  it('both reject a malleated signature (S + L), which tweetnacl alone would accept', () => {
    const v = RFC8032[1]!;
    const sig = hex(v.signature);
    const L = (1n << 252n) + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
    let s2 = s + L;
    expect(s2 < 1n << 256n).toBe(true);
    const malleated = new Uint8Array(sig);
    for (let i = 0; i < 32; i++) {
      malleated[32 + i] = Number(s2 & 0xffn);
      s2 >>= 8n;
    }
    const pk = nodeEd25519.publicKeyFromSeed(hex(v.seed));
    expect(nodeEd25519.verify(pk, hex(v.message), malleated)).toBe(false);
    expect(tweetnaclEd25519.verify(pk, hex(v.message), malleated)).toBe(false);
  });
});

describe('ed25519 node: key cache', () => {
  it('stays bounded when verifying with many distinct keys', () => {
    const rand = drbg('cache');
    const msg = rand(10);
    const sig = rand(64);
    for (let i = 0; i < NODE_ED25519_CACHE_LIMITS.publicKeys + 200; i++) {
      nodeEd25519.verify(nodeEd25519.publicKeyFromSeed(rand(32)), msg, sig);
    }
    const sizes = nodeEd25519CacheSizes();
    expect(sizes.publicKeys).toBeLessThanOrEqual(NODE_ED25519_CACHE_LIMITS.publicKeys);
    expect(sizes.privateKeys).toBeLessThanOrEqual(NODE_ED25519_CACHE_LIMITS.privateKeys);
  });

  it('is correct per key when keys alternate, repeat, or fall out of the cache', () => {
    const rand = drbg('cache-per-key');
    const msg = rand(100);
    const keys = Array.from({ length: 12 }, () => {
      const seed = rand(32);
      return { pk: nodeEd25519.publicKeyFromSeed(seed), sig: nodeEd25519.sign(seed, msg) };
    });
    clearNodeEd25519Caches();
    // Runs of one key (the latest-key shortcut), alternation, and every wrong pairing.
    const order = [0, 0, 0, 1, 0, 1, 1, 2, 11, 2, 5, 5, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 11];
    for (const i of order) {
      for (let j = 0; j < keys.length; j++) {
        expect(nodeEd25519.verify(keys[i]!.pk, msg, keys[j]!.sig), `key ${i}, signature ${j}`).toBe(i === j);
        expect(nodeEd25519.verify(keys[i]!.pk, msg, keys[i]!.sig)).toBe(true);
      }
    }
    expect(nodeEd25519CacheSizes().publicKeys).toBe(keys.length);
    // Evicted by many other keys, then used again.
    for (let n = 0; n < NODE_ED25519_CACHE_LIMITS.publicKeys; n++) nodeEd25519.verify(rand(32), msg, keys[0]!.sig);
    expect(nodeEd25519CacheSizes().publicKeys).toBeLessThanOrEqual(NODE_ED25519_CACHE_LIMITS.publicKeys);
    for (const [i, k] of keys.entries()) {
      expect(nodeEd25519.verify(k.pk, msg, k.sig), `key ${i} after eviction`).toBe(true);
      expect(nodeEd25519.verify(k.pk, msg, keys[(i + 1) % keys.length]!.sig)).toBe(false);
    }
  });

  it('a run of verifies with one key adds one cache entry, and clearing forgets it', () => {
    clearNodeEd25519Caches();
    const v = RFC8032[1]!;
    const pk = nodeEd25519.publicKeyFromSeed(hex(v.seed));
    for (let i = 0; i < 50; i++) expect(nodeEd25519.verify(pk, hex(v.message), hex(v.signature))).toBe(true);
    expect(nodeEd25519CacheSizes().publicKeys).toBe(1);
    clearNodeEd25519Caches();
    expect(nodeEd25519CacheSizes().publicKeys).toBe(0);
    expect(nodeEd25519.verify(new Uint8Array(pk), hex(v.message), hex(v.signature))).toBe(true);
    expect(nodeEd25519CacheSizes().publicKeys).toBe(1);
  });

  it('compares the bytes, not the array: a key array changed in place is a different key', () => {
    const v = RFC8032[2]!;
    const pk = nodeEd25519.publicKeyFromSeed(hex(v.seed));
    const msg = hex(v.message);
    const sig = hex(v.signature);
    expect(nodeEd25519.verify(pk, msg, sig)).toBe(true);
    pk[5]! ^= 0x40;
    expect(nodeEd25519.verify(pk, msg, sig)).toBe(false);
    pk[5]! ^= 0x40;
    expect(nodeEd25519.verify(pk, msg, sig)).toBe(true);
    // The same bytes at another offset of a bigger buffer are the same key.
    const bigger = new Uint8Array(40);
    bigger.set(pk, 8);
    expect(nodeEd25519.verify(bigger.subarray(8), msg, sig)).toBe(true);
    bigger[8]! ^= 1;
    expect(nodeEd25519.verify(bigger.subarray(8), msg, sig)).toBe(false);
  });

  it('gives correct results for a cached key after the caller mutates its input array', () => {
    const seed = hex(RFC8032[0]!.seed);
    const pk = nodeEd25519.publicKeyFromSeed(seed);
    const msg = new Uint8Array([1, 2, 3]);
    const sig = nodeEd25519.sign(seed, msg);
    expect(nodeEd25519.verify(pk, msg, sig)).toBe(true);
    const pk2 = new Uint8Array(pk);
    pk2[0]! ^= 1;
    expect(nodeEd25519.verify(pk2, msg, sig)).toBe(false);
    expect(nodeEd25519.verify(pk, msg, sig)).toBe(true);
  });
});
