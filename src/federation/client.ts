// Outgoing federation requests, signed with X-Matrix, through the outbound guards of
// safeFetch (address check, no redirects, capped body, bounded time).
import { canonicalJson, signRequest, type SigningKey } from '../crypto/index.ts';
import type { ServerResolver } from './resolver.ts';
import { defaultSafeFetcher, type SafeFetcher } from './safeFetch.ts';

export interface FederationResponse<T = unknown> {
  status: number;
  body: T;
}

/** The peer could not be reached, did not answer in time, or answered in a way we refuse. */
export class FederationUnreachableError extends Error {
  override readonly name = 'FederationUnreachableError';
}

export class FederationClient {
  constructor(
    readonly serverName: string,
    private readonly key: SigningKey,
    readonly resolver: ServerResolver,
    private readonly fetcher: SafeFetcher = defaultSafeFetcher(),
  ) {}

  /**
   * Sends a signed request; `path` includes the query string. What is signed is the
   * request target as it goes on the wire — the URL parser's form of `path`, which
   * percent-encodes what a client may leave bare (a `'` in a query value becomes `%27`) —
   * since the receiver checks the signature against the target it receives.
   */
  async request<T = unknown>(destination: string, method: string, path: string, body?: unknown, timeoutMs = 30_000, signal?: AbortSignal): Promise<FederationResponse<T>> {
    const { base, trusted } = await this.resolver.resolve(destination);
    let url: URL;
    try {
      url = new URL(base + path);
    } catch {
      throw new FederationUnreachableError(`${method} ${path.split('?')[0]} to ${destination}: not a valid URL`);
    }
    const authorization = signRequest({ method, uri: url.pathname + url.search, origin: this.serverName, destination, content: body }, this.key);
    let res;
    try {
      res = await this.fetcher.fetch(url.href, {
        destination,
        method,
        headers: { authorization, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? canonicalJson(body) : undefined,
        trusted,
        timeoutMs,
        signal,
      });
    } catch (err) {
      throw new FederationUnreachableError(`${method} ${path.split('?')[0]} to ${(err as Error).message}`, { cause: err });
    }
    const text = res.body.toString('utf8');
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      parsed = { errcode: 'M_UNKNOWN', error: 'the peer answered with something that is not JSON' };
    }
    return { status: res.status, body: parsed as T };
  }
}
