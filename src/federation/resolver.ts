// Server discovery: a configured map of server name → base URL first (loopback tests,
// private deployments), then /.well-known/matrix/server, then https://<name>:8448.
// A name with an explicit port, or an IP literal, is used as it is (no well-known).
// Only configured destinations are `trusted` (exempt from the outbound address check).
import { LRUCache } from 'lru-cache';
import { isValidServerName } from '../events/ids.ts';
import { defaultSafeFetcher, SafeFetcher } from './safeFetch.ts';

const WELL_KNOWN_CACHE_MS = 60 * 60_000;
const WELL_KNOWN_TIMEOUT_MS = 5_000;
/** A .well-known answer is a tiny JSON object. */
const WELL_KNOWN_MAX_BYTES = 64 * 1024;
const MAX_CACHED_NAMES = 10_000;

export interface ResolvedServer {
  /** Base URL without a trailing slash. */
  base: string;
  /** Configured by the operator: the outbound address check does not apply. */
  trusted: boolean;
}

type WellKnownFetch = (url: string, serverName: string) => Promise<{ ok: boolean; text: string }>;

export class ServerResolver {
  /** Base URLs found through .well-known, each for WELL_KNOWN_CACHE_MS (on the injected clock). */
  private readonly wellKnown = new LRUCache<string, string>({
    max: MAX_CACHED_NAMES,
    ttl: WELL_KNOWN_CACHE_MS,
    ttlAutopurge: false,
    perf: { now: () => this.now() },
    ttlResolution: 0,
  });
  private readonly fetchWellKnown: WellKnownFetch;

  /**
   * `fetcher` makes the .well-known requests; a plain fetch function is accepted for
   * tests that script the answers (it bypasses the outbound guards).
   */
  constructor(
    private readonly destinations: Record<string, string>,
    private readonly now: () => number = Date.now,
    fetcher: SafeFetcher | typeof fetch = defaultSafeFetcher(),
  ) {
    this.fetchWellKnown =
      fetcher instanceof SafeFetcher
        ? async (url, serverName) => {
            const res = await fetcher.fetch(url, { destination: serverName, timeoutMs: WELL_KNOWN_TIMEOUT_MS, maxResponseBytes: WELL_KNOWN_MAX_BYTES });
            return { ok: res.status >= 200 && res.status < 300, text: res.body.toString('utf8') };
          }
        : async (url) => {
            const res = await fetcher(url, { signal: AbortSignal.timeout(WELL_KNOWN_TIMEOUT_MS), redirect: 'manual' });
            return { ok: res.ok, text: await res.text() };
          };
  }

  async baseUrl(serverName: string): Promise<string> {
    return (await this.resolve(serverName)).base;
  }

  async resolve(serverName: string): Promise<ResolvedServer> {
    const configured = Object.hasOwn(this.destinations, serverName) ? this.destinations[serverName] : undefined;
    if (configured) return { base: configured.replace(/\/+$/, ''), trusted: true };
    if (hasPort(serverName) || isIpLiteral(serverName)) return { base: defaultBase(serverName), trusted: false };
    const cached = this.wellKnown.get(serverName);
    if (cached !== undefined) return { base: cached, trusted: false };
    let base = defaultBase(serverName);
    try {
      const res = await this.fetchWellKnown(`https://${serverName}/.well-known/matrix/server`, serverName);
      if (res.ok) {
        const body = JSON.parse(res.text) as { 'm.server'?: unknown };
        const delegated = body?.['m.server'];
        if (typeof delegated === 'string' && isValidServerName(delegated)) base = defaultBase(delegated);
      }
    } catch {
      // no well-known: the default applies
    }
    this.wellKnown.set(serverName, base);
    return { base, trusted: false };
  }
}

function hasPort(name: string): boolean {
  return /:\d+$/.test(name) && (!name.startsWith('[') || /\]:\d+$/.test(name));
}

function isIpLiteral(name: string): boolean {
  return name.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}(:\d+)?$/.test(name);
}

function defaultBase(serverName: string): string {
  return hasPort(serverName) ? `https://${serverName}` : `https://${serverName}:8448`;
}
