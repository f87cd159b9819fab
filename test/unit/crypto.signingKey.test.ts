import { mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64Unpadded } from '../../src/crypto/base64.ts';
import { nodeEd25519, tweetnaclEd25519 } from '../../src/crypto/ed25519.ts';
import { SigningKeyFileError, formatSigningKeyFile, generateSigningKey, loadOrCreateSigningKeyFile, parseSigningKeyFile, parseSigningKeys, signingKeyFromSeed } from '../../src/crypto/signingKey.ts';

// Matrix spec, appendices "Cryptographic Test Vectors" > "Signing Key".
const SPEC_SEED_B64 = 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1';

describe('SigningKey objects', () => {
  it('derives the public key with the chosen implementation (node and tweetnacl agree)', () => {
    const seed = decodeBase64(SPEC_SEED_B64);
    const a = signingKeyFromSeed('1', seed, nodeEd25519);
    const b = signingKeyFromSeed('1', seed, tweetnaclEd25519);
    expect(a.keyId).toBe('ed25519:1');
    expect(a.publicKey).toEqual(b.publicKey);
    expect(a.seed).toEqual(seed);
  });

  it("copies the seed, so later changes to the caller's array do not affect the key", () => {
    const seed = decodeBase64(SPEC_SEED_B64);
    const key = signingKeyFromSeed('1', seed);
    seed.fill(0);
    expect(encodeBase64Unpadded(key.seed)).toBe(encodeBase64Unpadded(decodeBase64(SPEC_SEED_B64)));
  });

  it('never shows the seed in JSON.stringify, util.inspect, console-style formatting or spreads', () => {
    for (const key of [generateSigningKey(), signingKeyFromSeed('1', decodeBase64(SPEC_SEED_B64))]) {
      const seedStd = encodeBase64Unpadded(key.seed);
      const seedUrl = Buffer.from(key.seed).toString('base64url');
      const seedHex = Buffer.from(key.seed).toString('hex');
      const renderings = [
        JSON.stringify(key),
        JSON.stringify({ nested: { key } }),
        inspect(key),
        inspect(key, { showHidden: true, depth: 10 }),
        inspect({ nested: [key] }, { depth: 10 }),
        JSON.stringify({ ...key }),
        Object.keys(key).join(','),
      ];
      for (const text of renderings) {
        expect(text).not.toContain(seedStd);
        expect(text).not.toContain(seedUrl);
        expect(text).not.toContain(seedHex);
        expect(text).not.toMatch(/seed/i);
      }
      expect(JSON.parse(JSON.stringify(key))).toEqual({
        keyId: key.keyId,
        publicKey: encodeBase64Unpadded(key.publicKey),
      });
      expect(inspect(key)).toContain(key.keyId);
      expect(inspect(key)).toContain(encodeBase64Unpadded(key.publicKey));
      expect(Object.keys(key).sort()).toEqual(['keyId', 'publicKey']);
    }
  });

  it('is frozen', () => {
    const key = generateSigningKey();
    expect(Object.isFrozen(key)).toBe(true);
    expect(() => {
      (key as { keyId: string }).keyId = 'ed25519:other';
    }).toThrow(TypeError);
  });

  it('generates random versions like a_XXXX and random seeds', () => {
    const keys = Array.from({ length: 20 }, () => generateSigningKey());
    for (const key of keys) {
      expect(key.keyId).toMatch(/^ed25519:a_[a-zA-Z0-9]{4}$/);
      expect(key.seed).toHaveLength(32);
      expect(key.publicKey).toHaveLength(32);
    }
    expect(new Set(keys.map((k) => encodeBase64Unpadded(k.seed))).size).toBe(keys.length);
  });

  it('accepts an explicit version and rejects invalid ones', () => {
    expect(generateSigningKey('auto').keyId).toBe('ed25519:auto');
    for (const bad of ['', 'a b', 'a:b', 'ä', 'a-b']) {
      expect(() => generateSigningKey(bad)).toThrow(SigningKeyFileError);
    }
  });
});

describe('key file format (Synapse: "ed25519 <version> <unpadded base64 seed>")', () => {
  it('round-trips', () => {
    const key = generateSigningKey('a_Ab12');
    const text = formatSigningKeyFile(key);
    expect(text).toBe(`ed25519 a_Ab12 ${encodeBase64Unpadded(key.seed)}\n`);
    const parsed = parseSigningKeyFile(text);
    expect(parsed.keyId).toBe(key.keyId);
    expect(parsed.seed).toEqual(key.seed);
    expect(parsed.publicKey).toEqual(key.publicKey);
  });

  it('parses the spec seed with its non-zero trailing bits, padded seeds, CRLF and blank lines', () => {
    expect(parseSigningKeyFile(`ed25519 1 ${SPEC_SEED_B64}`).seed).toEqual(decodeBase64(SPEC_SEED_B64));
    const padded = `${encodeBase64Unpadded(new Uint8Array(32).fill(7))}=`;
    expect(parseSigningKeyFile(`\r\n  ed25519   auto   ${padded}  \r\n\r\n`).seed).toEqual(new Uint8Array(32).fill(7));
  });

  it('returns the first key and can list all of them', () => {
    const a = generateSigningKey('a_1111');
    const b = generateSigningKey('a_2222');
    const text = formatSigningKeyFile(a) + formatSigningKeyFile(b);
    expect(parseSigningKeyFile(text).keyId).toBe('ed25519:a_1111');
    expect(parseSigningKeys(text).map((k) => k.keyId)).toEqual(['ed25519:a_1111', 'ed25519:a_2222']);
  });

  it.each([
    ['empty', ''],
    ['blank lines only', '\n \n'],
    ['two fields', 'ed25519 a_1'],
    ['four fields', `ed25519 a_1 ${SPEC_SEED_B64} extra`],
    ['unknown algorithm', `curve448 a_1 ${SPEC_SEED_B64}`],
    ['bad version', `ed25519 a-1 ${SPEC_SEED_B64}`],
    ['bad base64', 'ed25519 a_1 !!!!'],
    ['short seed', `ed25519 a_1 ${encodeBase64Unpadded(new Uint8Array(31))}`],
    ['long seed', `ed25519 a_1 ${encodeBase64Unpadded(new Uint8Array(33))}`],
  ])('rejects %s', (_name, text) => {
    expect(() => parseSigningKeyFile(text)).toThrow(SigningKeyFileError);
  });

  it('does not put the seed into error messages', () => {
    const seed31 = encodeBase64Unpadded(new Uint8Array(31).fill(9));
    try {
      parseSigningKeyFile(`ed25519 a_1 ${seed31}`);
      expect.fail('should have thrown');
    } catch (err) {
      expect(String((err as Error).message)).not.toContain(seed31);
    }
  });
});

describe('loadOrCreateSigningKeyFile', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'peekd-signing-key-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the file (and parent dirs) with mode 0600, then loads the same key', async () => {
    const path = join(dir, 'nested', 'deeper', 'signing.key');
    const first = await loadOrCreateSigningKeyFile(path);
    expect(first.created).toBe(true);
    const st = await stat(path);
    if (process.platform !== 'win32') expect(st.mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toBe(formatSigningKeyFile(first.key));

    const second = await loadOrCreateSigningKeyFile(path);
    expect(second.created).toBe(false);
    expect(second.key.keyId).toBe(first.key.keyId);
    expect(second.key.seed).toEqual(first.key.seed);
    expect(second.key.publicKey).toEqual(first.key.publicKey);

    // No temp files left behind.
    expect(await readdir(join(dir, 'nested', 'deeper'))).toEqual(['signing.key']);
  });

  it('loads an existing Synapse-style file without rewriting it', async () => {
    const path = join(dir, 'synapse.signing.key');
    await writeFile(path, `ed25519 a_Syn1 ${SPEC_SEED_B64}\n`, { mode: 0o640 });
    const { key, created } = await loadOrCreateSigningKeyFile(path);
    expect(created).toBe(false);
    expect(key.keyId).toBe('ed25519:a_Syn1');
    expect(key.seed).toEqual(decodeBase64(SPEC_SEED_B64));
    expect(await readFile(path, 'utf8')).toBe(`ed25519 a_Syn1 ${SPEC_SEED_B64}\n`);
  });

  it('fails loudly on a corrupt file instead of replacing it', async () => {
    const path = join(dir, 'corrupt.key');
    await writeFile(path, 'garbage\n');
    await expect(loadOrCreateSigningKeyFile(path)).rejects.toThrow(SigningKeyFileError);
    expect(await readFile(path, 'utf8')).toBe('garbage\n');
  });
});
