// Remote servers' signing keys: fetched from their /_matrix/key/v2/server, accepted only
// with a valid self-signature, cached until min(valid_until_ts, now + 7 days).
import { decodeBase64, verifyJsonSignature } from '../crypto';
import type { ServerResolver } from './resolver';

const MAX_CACHE_MS = 7 * 24 * 60 * 60_000;
const FAILURE_CACHE_MS = 5_000;

interface ServerKeys {
  /** Current keys: valid for requests and events. */
  verify: Map<string, Uint8Array>;
  /** Old keys: valid for events signed before `expired_ts`. */
  old: Map<string, { key: Uint8Array; expiredTs: number }>;
  until: number;
}

interface KeyResponse {
  server_name?: unknown;
  verify_keys?: Record<string, { key?: unknown }>;
  old_verify_keys?: Record<string, { key?: unknown; expired_ts?: unknown }>;
  valid_until_ts?: unknown;
  signatures?: unknown;
}

export class KeyRing {
  private readonly cache = new Map<string, ServerKeys | { failedUntil: number }>();
  private readonly inflight = new Map<string, Promise<ServerKeys | null>>();

  constructor(
    private readonly resolver: ServerResolver,
    private readonly now: () => number = Date.now,
    /** Our own keys, answered without a fetch. */
    private readonly own?: { serverName: string; keys: Map<string, Uint8Array> },
  ) {}

  /** A current verify key of `server`, or null when there is none we trust. */
  async requestKey(server: string, keyId: string): Promise<Uint8Array | null> {
    if (this.own && server === this.own.serverName) return this.own.keys.get(keyId) ?? null;
    let keys = await this.keysOf(server);
    if (keys && !keys.verify.has(keyId)) keys = await this.keysOf(server, true); // rotated since we looked
    return keys?.verify.get(keyId) ?? null;
  }

  /** A key of `server` that may verify an event: current, or old (expired after the event). */
  async eventKey(server: string, keyId: string, eventTs: number): Promise<Uint8Array | null> {
    if (this.own && server === this.own.serverName) return this.own.keys.get(keyId) ?? null;
    const keys = await this.keysOf(server);
    const current = keys?.verify.get(keyId);
    if (current) return current;
    const old = keys?.old.get(keyId);
    if (old && eventTs < old.expiredTs) return old.key;
    return (await this.keysOf(server, true))?.verify.get(keyId) ?? null;
  }

  private async keysOf(server: string, refresh = false): Promise<ServerKeys | null> {
    const cached = this.cache.get(server);
    if (cached && !refresh) {
      if ('failedUntil' in cached) {
        if (cached.failedUntil > this.now()) return null;
      } else if (cached.until > this.now()) return cached;
    }
    let pending = this.inflight.get(server);
    if (!pending) {
      pending = this.fetchKeys(server).finally(() => this.inflight.delete(server));
      this.inflight.set(server, pending);
    }
    return pending;
  }

  private async fetchKeys(server: string): Promise<ServerKeys | null> {
    try {
      const base = await this.resolver.baseUrl(server);
      const res = await fetch(`${base}/_matrix/key/v2/server`, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`status ${res.status}`);
      const keys = parseKeyResponse(server, (await res.json()) as KeyResponse, this.now());
      if (!keys) throw new Error('invalid key response');
      this.cache.set(server, keys);
      return keys;
    } catch {
      this.cache.set(server, { failedUntil: this.now() + FAILURE_CACHE_MS });
      return null;
    }
  }
}

/** Checks a key response's shape and self-signature; null when it does not hold. */
export function parseKeyResponse(server: string, body: KeyResponse, now: number): ServerKeys | null {
  if (body.server_name !== server || typeof body.valid_until_ts !== 'number' || !body.verify_keys) return null;
  const verify = new Map<string, Uint8Array>();
  for (const [keyId, v] of Object.entries(body.verify_keys)) {
    if (!/^ed25519:[a-zA-Z0-9_]+$/.test(keyId) || typeof v?.key !== 'string') continue;
    try {
      verify.set(keyId, decodeBase64(v.key));
    } catch {
      // skip a malformed key
    }
  }
  // Every current key must have signed the response.
  if (verify.size === 0) return null;
  for (const [keyId, key] of verify) if (!verifyJsonSignature(body, server, keyId, key)) return null;
  const old = new Map<string, { key: Uint8Array; expiredTs: number }>();
  for (const [keyId, v] of Object.entries(body.old_verify_keys ?? {})) {
    if (typeof v?.key !== 'string' || typeof v.expired_ts !== 'number') continue;
    try {
      old.set(keyId, { key: decodeBase64(v.key), expiredTs: v.expired_ts });
    } catch {
      // skip
    }
  }
  return { verify, old, until: Math.min(body.valid_until_ts, now + MAX_CACHE_MS) };
}
