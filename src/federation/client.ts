// Outgoing federation requests, signed with X-Matrix.
import { canonicalJson, signRequest, type SigningKey } from '../crypto';
import type { ServerResolver } from './resolver';

export interface FederationResponse<T = unknown> {
  status: number;
  body: T;
}

/** The peer could not be reached or did not answer in time. */
export class FederationUnreachableError extends Error {
  override readonly name = 'FederationUnreachableError';
}

export class FederationClient {
  constructor(
    readonly serverName: string,
    private readonly key: SigningKey,
    readonly resolver: ServerResolver,
  ) {}

  /** Sends a signed request; `path` includes the query string exactly as it goes on the wire. */
  async request<T = unknown>(destination: string, method: string, path: string, body?: unknown, timeoutMs = 30_000, signal?: AbortSignal): Promise<FederationResponse<T>> {
    const base = await this.resolver.baseUrl(destination);
    const authorization = signRequest({ method, uri: path, origin: this.serverName, destination, content: body }, this.key);
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? canonicalJson(body) : undefined,
        signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new FederationUnreachableError(`${destination} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new FederationUnreachableError(`${destination} broke off its answer: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      parsed = { errcode: 'M_UNKNOWN', error: 'the peer answered with something that is not JSON' };
    }
    return { status: res.status, body: parsed as T };
  }
}
