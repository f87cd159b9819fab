// Remote servers' signing keys: fetched from their /_matrix/key/v2/server, accepted only
// with a valid self-signature, cached until min(valid_until_ts, now + 7 days). A key ID
// we do not know makes us look again (the server may have rotated), but at most once per
// origin per `refetchIntervalMs`: a flood of requests naming made-up key IDs costs the
// origin one fetch, not one each.
import { LRUCache } from 'lru-cache';
import { decodeBase64, enforcesKeyValidity, verifyJsonSignature } from '../crypto/index.ts';
import type { ServerResolver } from './resolver.ts';
import { defaultSafeFetcher, type SafeFetcher } from './safeFetch.ts';

const MAX_CACHE_MS = 7 * 24 * 60 * 60_000;
const FAILURE_CACHE_MS = 5_000;
/** A key response is a few keys and signatures; anything near this is not one. */
export const MAX_KEY_RESPONSE_BYTES = 1024 * 1024;
export const KEY_FETCH_TIMEOUT_MS = 10_000;
export const KEY_REFETCH_INTERVAL_MS = 30_000;
/** Servers whose keys (or failures, or last refetch) are remembered; the least recently used go first. */
const MAX_REMEMBERED_SERVERS = 10_000;

export interface KeyRingOptions {
  fetcher?: SafeFetcher;
  /** Bound on one key fetch. */
  fetchTimeoutMs?: number;
  /** Least time between two refetches of one origin's keys caused by an unknown key ID. */
  refetchIntervalMs?: number;
  maxResponseBytes?: number;
}

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
  /** Keys (until `until`) or a failure (until `failedUntil`) per server, expiry checked on the injected clock. */
  private readonly cache = new LRUCache<string, ServerKeys | { failedUntil: number }>({ max: MAX_REMEMBERED_SERVERS });
  /**
   * Fetches under way, one per server, each removed as it settles (every fetch has a
   * timeout): a plain Map, bounded by how many fetches run at once, not by traffic over time.
   */
  private readonly inflight = new Map<string, Promise<ServerKeys | null>>();
  /**
   * When each origin's keys were last refetched for an unknown key ID. An origin evicted
   * here (MAX_REMEMBERED_SERVERS other origins looked up since) may be refetched again at once.
   */
  private readonly lastRefetch = new LRUCache<string, number>({ max: MAX_REMEMBERED_SERVERS });
  private readonly fetcher: SafeFetcher;
  private readonly fetchTimeoutMs: number;
  private readonly refetchIntervalMs: number;
  private readonly maxResponseBytes: number;

  constructor(
    private readonly resolver: ServerResolver,
    private readonly now: () => number = Date.now,
    /** Our own keys, answered without a fetch. */
    private readonly own?: { serverName: string; keys: Map<string, Uint8Array> },
    options: KeyRingOptions = {},
  ) {
    this.fetcher = options.fetcher ?? defaultSafeFetcher();
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? KEY_FETCH_TIMEOUT_MS;
    this.refetchIntervalMs = options.refetchIntervalMs ?? KEY_REFETCH_INTERVAL_MS;
    this.maxResponseBytes = options.maxResponseBytes ?? MAX_KEY_RESPONSE_BYTES;
  }

  /**
   * A current verify key of `server` that is valid now (its `valid_until_ts` not passed:
   * "keys used beyond this timestamp MUST be considered invalid"), or null when there is
   * none we trust. An unknown or run-out key makes us fetch the keys again once.
   */
  async requestKey(server: string, keyId: string): Promise<Uint8Array | null> {
    if (this.own && server === this.own.serverName) return this.own.keys.get(keyId) ?? null;
    const valid = (keys: ServerKeys | null) => (keys && keys.until > this.now() ? keys.verify.get(keyId) : undefined);
    const keys = await this.keysOf(server);
    const found = valid(keys);
    if (found) return found;
    // (No keys at all: the fetch failed, and its back-off decides when to try again.)
    if (!keys || !this.mayRefetch(server)) return null; // rotated, or extended, since we looked
    return valid(await this.keysOf(server, true)) ?? null;
  }

  /**
   * A key of `server` that may verify an event sent at `eventTs` in a room of `roomVersion`:
   * an old key expired after the event, or a current one — in room versions 5 and later
   * only while its validity (`valid_until_ts`, at most seven days from its fetch) reaches
   * the event; if it does not, the keys are fetched again once, in case the server has
   * extended it since.
   */
  async eventKey(server: string, keyId: string, eventTs: number, roomVersion: string): Promise<Uint8Array | null> {
    if (this.own && server === this.own.serverName) return this.own.keys.get(keyId) ?? null;
    const enforce = enforcesKeyValidity(roomVersion);
    const pick = (keys: ServerKeys | null): Uint8Array | undefined => {
      const current = keys?.verify.get(keyId);
      if (current && (!enforce || eventTs <= keys!.until)) return current;
      const old = keys?.old.get(keyId);
      return old && eventTs < old.expiredTs ? old.key : undefined;
    };
    const found = pick(await this.keysOf(server));
    if (found) return found;
    if (!this.mayRefetch(server)) return null;
    return pick(await this.keysOf(server, true)) ?? null;
  }

  /** Whether an unknown key ID may make us fetch `server`'s keys again now (and if so, counts it). */
  private mayRefetch(server: string): boolean {
    const now = this.now();
    const last = this.lastRefetch.get(server);
    if (last !== undefined && now - last < this.refetchIntervalMs) return false;
    this.lastRefetch.set(server, now);
    return true;
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

  /** The server's cached keys if they are still valid. */
  private holdsValid(server: string): ServerKeys | undefined {
    const held = this.cache.get(server);
    return held && !('failedUntil' in held) && held.until > this.now() ? held : undefined;
  }

  private async fetchKeys(server: string): Promise<ServerKeys | null> {
    try {
      const { base, trusted } = await this.resolver.resolve(server);
      const res = await this.fetcher.fetch(`${base}/_matrix/key/v2/server`, {
        destination: server,
        trusted,
        timeoutMs: this.fetchTimeoutMs,
        maxResponseBytes: this.maxResponseBytes,
      });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
      const keys = parseKeyResponse(server, JSON.parse(res.body.toString('utf8')) as KeyResponse, this.now());
      if (!keys) throw new Error('invalid key response');
      // Keys that have run out already are answered (a caller may ask once more, in case
      // they were extended) but remembered as a failure, so they are not fetched per request.
      if (keys.until > this.now()) this.cache.set(server, keys);
      else if (!this.holdsValid(server)) this.cache.set(server, { failedUntil: this.now() + FAILURE_CACHE_MS });
      return keys;
    } catch {
      // A failed refetch does not forget keys that are still valid.
      const held = this.holdsValid(server);
      if (held) return held;
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
