// This server's keys as others see them: GET /_matrix/key/v2/server, self-signed. Keys
// retired by `peekd keys rotate` stay listed under old_verify_keys.
import { readFile } from 'node:fs/promises';
import { encodeBase64Unpadded, formatSigningKeyFile, generateSigningKey, signJson, type SigningKey } from '../crypto/index.ts';
import { writePrivateFile } from '../crypto/signingKey.ts';

export interface OldKey {
  keyId: string;
  publicKey: string;
  expiredTs: number;
}

export const KEY_RESPONSE_LIFETIME_MS = 24 * 60 * 60_000;

export function oldKeysPath(signingKeyPath: string): string {
  return `${signingKeyPath}.old.json`;
}

export async function loadOldKeys(signingKeyPath: string): Promise<OldKey[]> {
  try {
    const parsed = JSON.parse(await readFile(oldKeysPath(signingKeyPath), 'utf8')) as Record<string, { key: string; expired_ts: number }>;
    return Object.entries(parsed).map(([keyId, v]) => ({ keyId, publicKey: v.key, expiredTs: v.expired_ts }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Retires the current key (kept as an old verify key) and writes a new one. */
export async function rotateSigningKey(signingKeyPath: string, current: SigningKey, now: number): Promise<SigningKey> {
  const old = await loadOldKeys(signingKeyPath);
  old.push({ keyId: current.keyId, publicKey: encodeBase64Unpadded(current.publicKey), expiredTs: now });
  const json: Record<string, { key: string; expired_ts: number }> = {};
  for (const k of old) json[k.keyId] = { key: k.publicKey, expired_ts: k.expiredTs };
  // Old keys first: a crash before the new key is written leaves the current key listed
  // twice, never a retired key missing from old_verify_keys. Both files are written as the
  // first start writes the key (0600, whole or not at all).
  await writePrivateFile(oldKeysPath(signingKeyPath), JSON.stringify(json, null, 2));
  const next = generateSigningKey();
  await writePrivateFile(signingKeyPath, formatSigningKeyFile(next));
  return next;
}

export class OwnKeys {
  private cached?: { body: Record<string, unknown>; until: number };

  constructor(
    readonly serverName: string,
    readonly current: SigningKey,
    readonly old: OldKey[],
    private readonly now: () => number,
  ) {}

  /** The signed key response, re-signed when it is half-way to its valid_until_ts. */
  response(): Record<string, unknown> {
    const now = this.now();
    if (this.cached && this.cached.until > now) return this.cached.body;
    const validUntil = now + KEY_RESPONSE_LIFETIME_MS;
    const oldVerify: Record<string, { key: string; expired_ts: number }> = {};
    for (const k of this.old) if (k.keyId !== this.current.keyId) oldVerify[k.keyId] = { key: k.publicKey, expired_ts: k.expiredTs };
    const body = signJson(
      {
        server_name: this.serverName,
        verify_keys: { [this.current.keyId]: { key: encodeBase64Unpadded(this.current.publicKey) } },
        old_verify_keys: oldVerify,
        valid_until_ts: validUntil,
      },
      this.serverName,
      this.current,
    );
    this.cached = { body, until: now + KEY_RESPONSE_LIFETIME_MS / 2 };
    return body;
  }
}
