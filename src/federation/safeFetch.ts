// Every outbound federation HTTP request goes through here (signed requests, .well-known
// lookups, key fetches), so a remote server cannot turn peekd against its own network:
// the address actually connected to is checked against a deny list (resolved at connect
// time, so a DNS answer that changes between check and use does not get through), 3xx is
// never followed, the response body is capped, and the whole exchange is bounded in time.
// Destinations configured by name (PEEKD_FEDERATION_DESTINATIONS) are trusted: the
// operator chose them, so they skip the address check but keep every other bound.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import { DEFAULT_IP_DENYLIST } from '../config.ts';
import { addressForms, IpRanges } from '../ipRanges.ts';

/** Default bound on one whole exchange (connect, request, response body). */
export const DEFAULT_OUTBOUND_TIMEOUT_MS = 30_000;
/** Default response body cap when nothing smaller is asked for. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The address rules (Synapse's ip_range_blacklist / ip_range_whitelist): an address in
 * the allow list is always reachable; otherwise one in the deny list is not. An
 * IPv4-mapped IPv6 address is judged as itself and as the IPv4 address it carries, so
 * `::ffff:127.0.0.1` falls under `127.0.0.0/8` too. Anything unparseable is denied.
 */
export class IpGuard {
  private readonly deny: IpRanges;
  private readonly allow: IpRanges;

  constructor(denylist: readonly string[] = DEFAULT_IP_DENYLIST, allowlist: readonly string[] = []) {
    this.deny = new IpRanges(denylist);
    this.allow = new IpRanges(allowlist);
  }

  /** True when peekd may connect to `address` (an IP literal, without brackets). */
  allows(address: string): boolean {
    const forms = addressForms(address);
    if (forms.length === 0) return false;
    if (this.allow.holds(forms)) return true;
    return !this.deny.holds(forms);
  }
}

export type OutboundFailure = 'denied-address' | 'redirect' | 'too-large' | 'timeout' | 'aborted' | 'unreachable';

/** An outbound federation request that was refused or failed; the message names the destination and why. */
export class OutboundRequestError extends Error {
  override readonly name = 'OutboundRequestError';
  constructor(
    readonly destination: string,
    readonly reason: OutboundFailure,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`${destination}: ${detail}`, options);
  }
}

/** Raised inside the connect-time lookup; turned into an OutboundRequestError. */
class DeniedAddressError extends Error {
  override readonly name = 'DeniedAddressError';
  constructor(
    readonly host: string,
    readonly address: string,
  ) {
    super(`${host} resolves to ${address}, which outbound federation may not connect to`);
  }
}

export interface SafeFetchSettings {
  ipDenylist?: readonly string[];
  ipAllowlist?: readonly string[];
  /** Response body cap when a call asks for none. */
  maxResponseBytes?: number;
  /** Bound on a whole exchange when a call asks for none. */
  timeoutMs?: number;
  /** Name resolution (tests); dns.lookup by default. */
  lookup?: typeof dnsLookup;
}

export interface SafeRequest {
  /** The server name, for error messages. */
  destination: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** The URL came from the configured destinations map: no address check. */
  trusted?: boolean;
  maxResponseBytes?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SafeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The whole body, at most the cap. */
  body: Buffer;
}

export class SafeFetcher {
  readonly guard: IpGuard;
  private readonly maxResponseBytes: number;
  private readonly timeoutMs: number;
  /** Connects only to addresses the guard allows. */
  private readonly guarded: Agent;
  /** For configured destinations. */
  private readonly trusted: Agent;

  constructor(settings: SafeFetchSettings = {}) {
    this.guard = new IpGuard(settings.ipDenylist ?? DEFAULT_IP_DENYLIST, settings.ipAllowlist ?? []);
    this.maxResponseBytes = settings.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.timeoutMs = settings.timeoutMs ?? DEFAULT_OUTBOUND_TIMEOUT_MS;
    const resolve = settings.lookup ?? dnsLookup;
    const guard = this.guard;
    // net.connect calls this for host names (never for IP literals, checked in fetch()).
    // Every address of the answer must be allowed, as Synapse does: one denied address
    // refuses the name, so a mixed answer cannot be used to reach the denied one.
    const lookup = ((hostname: string, options: { all?: boolean; family?: number }, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
      resolve(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return callback(err, '');
        const list = addresses as LookupAddress[];
        const denied = list.find((a) => !guard.allows(a.address));
        if (denied) return callback(new DeniedAddressError(hostname, denied.address), '');
        if (list.length === 0) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
        if (options?.all) return callback(null, list);
        callback(null, list[0]!.address, list[0]!.family);
      });
    }) as unknown as LookupFunction;
    const common = { keepAliveTimeout: 4_000, maxRedirections: 0 };
    this.guarded = new Agent({ ...common, connect: { timeout: CONNECT_TIMEOUT_MS, lookup } });
    this.trusted = new Agent({ ...common, connect: { timeout: CONNECT_TIMEOUT_MS } });
  }

  /**
   * One request. Resolves with any non-3xx answer (the caller judges the status); rejects
   * with an OutboundRequestError when the address is denied, the peer redirects, the body
   * is over the cap, time runs out, or the peer cannot be reached.
   */
  async fetch(url: string, req: SafeRequest): Promise<SafeResponse> {
    const { destination } = req;
    const timeoutMs = req.timeoutMs ?? this.timeoutMs;
    const cap = req.maxResponseBytes ?? this.maxResponseBytes;
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      throw new OutboundRequestError(destination, 'unreachable', 'not a valid URL');
    }
    if (target.protocol !== 'https:' && target.protocol !== 'http:') throw new OutboundRequestError(destination, 'unreachable', `unsupported scheme ${target.protocol}`);
    const host = target.hostname.replace(/^\[(.*)\]$/, '$1');
    // IP literals never reach the lookup: check them here.
    if (!req.trusted && isIP(host) !== 0 && !this.guard.allows(host)) {
      throw new OutboundRequestError(destination, 'denied-address', `${host} is an address outbound federation may not connect to`);
    }
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    const failed = (err: unknown): OutboundRequestError => {
      if (err instanceof OutboundRequestError) return err;
      if (timeout.aborted) return new OutboundRequestError(destination, 'timeout', `no complete answer within ${timeoutMs} ms`, { cause: err });
      if (req.signal?.aborted) return new OutboundRequestError(destination, 'aborted', 'the request was aborted', { cause: err });
      const denied = deniedIn(err);
      if (denied) return new OutboundRequestError(destination, 'denied-address', denied.message, { cause: err });
      return new OutboundRequestError(destination, 'unreachable', `unreachable: ${describe(err)}`, { cause: err });
    };

    let res: Dispatcher.ResponseData;
    try {
      res = await (req.trusted ? this.trusted : this.guarded).request({
        origin: target.origin,
        path: target.pathname + target.search,
        method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
        headers: req.headers,
        body: req.body,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw failed(err);
    }
    try {
      if (res.statusCode >= 300 && res.statusCode < 400) {
        throw new OutboundRequestError(destination, 'redirect', `answered ${res.statusCode} (redirects are not followed)`);
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > cap) {
        throw new OutboundRequestError(destination, 'too-large', `announced a ${declared}-byte answer, over the ${cap}-byte limit`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > cap) throw new OutboundRequestError(destination, 'too-large', `answer exceeds the ${cap}-byte limit`);
        chunks.push(chunk as Buffer);
      }
      return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks, size) };
    } catch (err) {
      // Stop reading (and drop the connection) on any failure.
      res.body.on('error', () => undefined);
      res.body.destroy();
      throw failed(err);
    }
  }

  /** Closes idle connections; requests in flight are cut. */
  async close(): Promise<void> {
    await Promise.all([this.guarded.destroy(), this.trusted.destroy()]);
  }
}

function deniedIn(err: unknown): DeniedAddressError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof DeniedAddressError) return e;
    if (e instanceof AggregateError) {
      const inner = e.errors.find((x) => x instanceof DeniedAddressError);
      if (inner) return inner as DeniedAddressError;
    }
  }
  return undefined;
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.cause?.code === 'string' ? e.cause.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return code && !message.includes(code) ? `${code} ${message}` : message;
}

let shared: SafeFetcher | undefined;

/** A fetcher with the default rules, for callers not given one (tests, tools). */
export function defaultSafeFetcher(): SafeFetcher {
  shared ??= new SafeFetcher();
  return shared;
}
