/**
 * Server signing keys and the Synapse-compatible key file format:
 * one line per key, `ed25519 <version> <unpadded base64 seed>`.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { inspect } from 'node:util';
import { decodeBase64, encodeBase64Unpadded } from './base64.ts';
import { defaultEd25519, ED25519_SEED_LENGTH, type Ed25519 } from './ed25519.ts';

export interface SigningKey {
  /** `ed25519:<version>` */
  readonly keyId: string;
  /** 32-byte private seed. Non-enumerable: never serialized or logged. */
  readonly seed: Uint8Array;
  /** 32-byte public key. */
  readonly publicKey: Uint8Array;
}

/** Thrown for a malformed key file or key version. */
export class SigningKeyFileError extends Error {
  override readonly name = 'SigningKeyFileError';
}

const VERSION_RE = /^[a-zA-Z0-9_]+$/;
const ALPHANUMERIC = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

export function isValidKeyVersion(version: string): boolean {
  return typeof version === 'string' && VERSION_RE.test(version);
}

/** `ed25519:a_Ab3x` -> `a_Ab3x` */
export function keyVersionOf(key: SigningKey): string {
  const colon = key.keyId.indexOf(':');
  return key.keyId.slice(colon + 1);
}

/**
 * Builds a SigningKey from a seed. The returned object is frozen; its `seed`
 * is non-enumerable and JSON.stringify / util.inspect show only the key ID
 * and the public key.
 */
export function signingKeyFromSeed(version: string, seed: Uint8Array, ed: Ed25519 = defaultEd25519): SigningKey {
  if (!isValidKeyVersion(version)) {
    throw new SigningKeyFileError(`invalid key version ${JSON.stringify(version)}: must match [a-zA-Z0-9_]+`);
  }
  if (!(seed instanceof Uint8Array) || seed.length !== ED25519_SEED_LENGTH) {
    throw new SigningKeyFileError(`ed25519 seed must be ${ED25519_SEED_LENGTH} bytes`);
  }
  const ownSeed = new Uint8Array(seed);
  const publicKey = ed.publicKeyFromSeed(ownSeed);
  const keyId = `ed25519:${version}`;
  const redacted = (): { keyId: string; publicKey: string } => ({
    keyId,
    publicKey: encodeBase64Unpadded(publicKey),
  });
  const key = { keyId, publicKey } as SigningKey;
  Object.defineProperties(key, {
    seed: { value: ownSeed, enumerable: false, writable: false, configurable: false },
    toJSON: { value: redacted, enumerable: false },
    [inspect.custom]: {
      value: (_depth: number, options: { stylize?: (s: string, style: string) => string }) => {
        const r = redacted();
        const str = (s: string): string => (options?.stylize ? options.stylize(`'${s}'`, 'string') : `'${s}'`);
        return `SigningKey { keyId: ${str(r.keyId)}, publicKey: ${str(r.publicKey)} }`;
      },
      enumerable: false,
    },
  });
  return Object.freeze(key);
}

/** A random version of the form `a_XXXX` (as Synapse generates). */
export function randomKeyVersion(): string {
  let suffix = '';
  for (let i = 0; i < 4; i++) suffix += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return `a_${suffix}`;
}

/** Generates a fresh key with a random seed (and a random version unless given). */
export function generateSigningKey(version: string = randomKeyVersion(), ed: Ed25519 = defaultEd25519): SigningKey {
  const seed = new Uint8Array(randomBytes(ED25519_SEED_LENGTH));
  try {
    return signingKeyFromSeed(version, seed, ed);
  } finally {
    seed.fill(0);
  }
}

/** Parses every key in a key file. Blank lines are ignored; anything else malformed throws. */
export function parseSigningKeys(text: string, ed: Ed25519 = defaultEd25519): SigningKey[] {
  const keys: SigningKey[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const parts = line.split(/\s+/);
    if (parts.length !== 3) {
      throw new SigningKeyFileError(`key file line ${i + 1}: expected "<algorithm> <version> <base64 seed>"`);
    }
    const [algorithm, version, encoded] = parts as [string, string, string];
    if (algorithm !== 'ed25519') {
      throw new SigningKeyFileError(`key file line ${i + 1}: unsupported algorithm ${JSON.stringify(algorithm)}`);
    }
    let seed: Uint8Array;
    try {
      seed = decodeBase64(encoded);
    } catch {
      throw new SigningKeyFileError(`key file line ${i + 1}: seed is not valid base64`);
    }
    if (seed.length !== ED25519_SEED_LENGTH) {
      throw new SigningKeyFileError(`key file line ${i + 1}: seed must decode to ${ED25519_SEED_LENGTH} bytes`);
    }
    try {
      keys.push(signingKeyFromSeed(version, seed, ed));
    } catch (err) {
      throw err instanceof SigningKeyFileError ? new SigningKeyFileError(`key file line ${i + 1}: ${err.message}`) : err;
    } finally {
      seed.fill(0);
    }
  }
  return keys;
}

/** Parses a key file and returns its first key (the one Synapse signs with). */
export function parseSigningKeyFile(text: string, ed: Ed25519 = defaultEd25519): SigningKey {
  const [first] = parseSigningKeys(text, ed);
  if (first === undefined) throw new SigningKeyFileError('key file contains no keys');
  return first;
}

/** `ed25519 <version> <unpadded base64 seed>\n` */
export function formatSigningKeyFile(key: SigningKey): string {
  if (!key.keyId.startsWith('ed25519:')) throw new SigningKeyFileError(`unsupported key id ${key.keyId}`);
  return `ed25519 ${keyVersionOf(key)} ${encodeBase64Unpadded(key.seed)}\n`;
}

/**
 * Reads the key file at `path`, or if it does not exist generates a key and writes it
 * (see writePrivateFile).
 */
export async function loadOrCreateSigningKeyFile(path: string, ed: Ed25519 = defaultEd25519): Promise<{ key: SigningKey; created: boolean }> {
  try {
    const text = await readFile(path, 'utf8');
    return { key: parseSigningKeyFile(text, ed), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }

  const key = generateSigningKey(undefined, ed);
  await writePrivateFile(path, formatSigningKeyFile(key));
  return { key, created: true };
}

/**
 * Writes `text` to `path`, readable by its owner only (mode 0600), whole or not at all:
 * missing parent directories are made 0700; the text goes to a temp file of a new name
 * (created exclusively, so no file or symlink left at a guessable name is reused or
 * followed), is synced, and is renamed over `path`; then the directory is synced.
 */
export async function writePrivateFile(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(tmp, 'wx', 0o600);
  try {
    try {
      await handle.chmod(0o600); // in case the umask is unusual
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDirectory(dir);
}

/** Best effort: persist the rename itself. Not supported everywhere (e.g. Windows). */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // ignore
  }
}
