/**
 * Ed25519 behind a small interface, with two interchangeable implementations:
 * node:crypto (OpenSSL, fast) and tweetnacl (pure JS, the reference the
 * node one is differentially tested against).
 *
 * Seeds and public keys are 32 bytes, signatures 64 bytes. `verify` never
 * throws: wrong lengths, non-Uint8Array input, undecodable keys and
 * non-canonical signatures all give `false`.
 */
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import nacl from 'tweetnacl';
import { toBuffer } from './base64.ts';

export interface Ed25519 {
  readonly name: string;
  publicKeyFromSeed(seed: Uint8Array): Uint8Array;
  sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

export const ED25519_SEED_LENGTH = 32;
export const ED25519_PUBLIC_KEY_LENGTH = 32;
export const ED25519_SIGNATURE_LENGTH = 64;

function assertSeed(seed: Uint8Array): void {
  if (!(seed instanceof Uint8Array) || seed.length !== ED25519_SEED_LENGTH) {
    throw new TypeError(`ed25519 seed must be a ${ED25519_SEED_LENGTH}-byte Uint8Array`);
  }
}

function assertMessage(message: Uint8Array): void {
  if (!(message instanceof Uint8Array)) throw new TypeError('message must be a Uint8Array');
}

function verifyArgsOk(publicKey: unknown, message: unknown, signature: unknown): boolean {
  return (
    publicKey instanceof Uint8Array &&
    publicKey.length === ED25519_PUBLIC_KEY_LENGTH &&
    message instanceof Uint8Array &&
    signature instanceof Uint8Array &&
    signature.length === ED25519_SIGNATURE_LENGTH
  );
}

// Group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const ORDER_L = Uint8Array.from([
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
]);

/** RFC 8032 section 5.1.7 requires S < L; tweetnacl does not check it (OpenSSL does). */
function scalarIsCanonical(signature: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i] as number;
    const l = ORDER_L[i] as number;
    if (s < l) return true;
    if (s > l) return false;
  }
  return false; // S == L
}

/** Pure-JS implementation on tweetnacl. */
export const tweetnaclEd25519: Ed25519 = Object.freeze({
  name: 'tweetnacl',
  publicKeyFromSeed(seed: Uint8Array): Uint8Array {
    assertSeed(seed);
    return nacl.sign.keyPair.fromSeed(seed).publicKey;
  },
  sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
    assertSeed(seed);
    assertMessage(message);
    const { secretKey } = nacl.sign.keyPair.fromSeed(seed);
    try {
      return nacl.sign.detached(message, secretKey);
    } finally {
      secretKey.fill(0);
    }
  },
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!verifyArgsOk(publicKey, message, signature)) return false;
    if (!scalarIsCanonical(signature)) return false;
    try {
      return nacl.sign.detached.verify(message, signature, publicKey);
    } catch {
      return false;
    }
  },
});

// DER prefixes for raw Ed25519 keys (RFC 8410): PKCS#8 v1 private key and SPKI public key.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Upper bounds of the node implementation's KeyObject caches (least recently used go first). */
export const NODE_ED25519_CACHE_LIMITS = Object.freeze({ privateKeys: 64, publicKeys: 1024 });

const privateKeyCache = new LRUCache<string, KeyObject>({ max: NODE_ED25519_CACHE_LIMITS.privateKeys });
const publicKeyCache = new LRUCache<string, KeyObject>({ max: NODE_ED25519_CACHE_LIMITS.publicKeys });

function privateKeyObject(seed: Uint8Array): KeyObject {
  assertSeed(seed);
  // Key the cache by a digest, so the raw seed is not kept around as a string.
  const cacheKey = createHash('sha256').update(seed).digest('base64');
  let key = privateKeyCache.get(cacheKey);
  if (key === undefined) {
    const der = Buffer.concat([PKCS8_PREFIX, seed]);
    try {
      key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    } finally {
      der.fill(0);
    }
    privateKeyCache.set(cacheKey, key);
  }
  return key;
}

/**
 * The key of the latest verify (a copy of its bytes) and its KeyObject: PDUs mostly come
 * in runs from one server, and comparing 32 bytes is cheaper than the cache's string key.
 * Always the most recently used entry of publicKeyCache, so skipping the cache's recency
 * update on a hit changes no eviction.
 */
let latestPublicKey: { bytes: Uint8Array; key: KeyObject } | undefined;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Returns undefined when OpenSSL refuses the key bytes. */
function publicKeyObject(publicKey: Uint8Array): KeyObject | undefined {
  if (latestPublicKey !== undefined && sameBytes(latestPublicKey.bytes, publicKey)) return latestPublicKey.key;
  const cacheKey = toBuffer(publicKey).toString('base64');
  let key = publicKeyCache.get(cacheKey);
  if (key === undefined) {
    try {
      key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    } catch {
      return undefined;
    }
    publicKeyCache.set(cacheKey, key);
  }
  latestPublicKey = { bytes: new Uint8Array(publicKey), key };
  return key;
}

/** OpenSSL-backed implementation via node:crypto, with bounded KeyObject caches. */
export const nodeEd25519: Ed25519 = Object.freeze({
  name: 'node',
  publicKeyFromSeed(seed: Uint8Array): Uint8Array {
    const spki = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' });
    return new Uint8Array(spki.subarray(SPKI_PREFIX.length));
  },
  sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
    assertMessage(message);
    return new Uint8Array(nodeSign(null, message, privateKeyObject(seed)));
  },
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!verifyArgsOk(publicKey, message, signature)) return false;
    const key = publicKeyObject(publicKey);
    if (key === undefined) return false;
    try {
      return nodeVerify(null, message, key, signature);
    } catch {
      return false;
    }
  },
});

/** Current sizes of the node implementation's key caches (for tests and metrics). */
export function nodeEd25519CacheSizes(): { privateKeys: number; publicKeys: number } {
  return { privateKeys: privateKeyCache.size, publicKeys: publicKeyCache.size };
}

/** Empties the node implementation's key caches. */
export function clearNodeEd25519Caches(): void {
  privateKeyCache.clear();
  publicKeyCache.clear();
  latestPublicKey = undefined;
}

export const defaultEd25519: Ed25519 = nodeEd25519;
