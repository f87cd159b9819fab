// Failed-login limits (password guessing): a token bucket per account and one per client
// address. Each login attempt takes a token from both before its password is hashed, so a
// burst of concurrent guesses cannot all slip through before the first one fails; a
// success gives its tokens back. With either bucket empty the attempt is refused without
// hashing — unless attempts still in flight hold the missing tokens: then it waits for
// them to end (`admit`), so logins that are all right never refuse each other however many
// come at once. Time comes from the injected clock.
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { LRUCache } from 'lru-cache';

export interface LoginLimiterOptions {
  /** Failed logins allowed in a burst (PEEKD_LOGIN_FAILURE_BURST). */
  burst: number;
  /** One token comes back every this many ms (PEEKD_LOGIN_FAILURE_REFILL_MS). */
  refillMs: number;
  /** Most buckets kept per kind (accounts, addresses); past it the least recently used goes. */
  maxEntries?: number;
  /** Milliseconds on a clock that does not go backwards. */
  now?: () => number;
}

export type LoginGate = { allowed: true } | { allowed: false; retryAfterMs: number };

/** Refill arithmetic in floating point: a level this close to a whole token is one. */
const EPSILON = 1e-9;

/**
 * Token buckets by key. Absent means full: a bucket is kept only while it is not, each entry
 * expiring (on the limiter's clock) at the moment its bucket has refilled, and past
 * `maxEntries` the least recently used goes.
 */
export class Buckets {
  private readonly levels: LRUCache<string, { tokens: number; atMs: number }>;

  constructor(
    private readonly burst: number,
    private readonly refillMs: number,
    maxEntries: number,
    now: () => number,
  ) {
    // Entries get their own ttl as they are set; ttlResolution 0 reads the clock on every check.
    this.levels = new LRUCache({ max: maxEntries, ttlAutopurge: false, perf: { now }, ttlResolution: 0 });
  }

  /** Buckets held that are not full yet (expired ones dropped first: O(n), for tests and diagnostics). */
  get size(): number {
    this.levels.purgeStale();
    return this.levels.size;
  }

  level(key: string, nowMs: number): number {
    const b = this.levels.get(key); // an expired entry is a bucket refilled: absent
    if (!b) return this.burst;
    return Math.min(this.burst, b.tokens + Math.max(0, nowMs - b.atMs) / this.refillMs);
  }

  /** ms until the bucket holds a whole token (0 if it does). */
  waitMs(key: string, nowMs: number): number {
    const missing = 1 - this.level(key, nowMs);
    return missing <= EPSILON ? 0 : Math.max(1, Math.ceil(missing * this.refillMs - 1e-6));
  }

  /** Adds `delta` tokens (negative to take); a bucket full again is forgotten. */
  add(key: string, delta: number, nowMs: number): void {
    const tokens = Math.min(this.burst, this.level(key, nowMs) + delta);
    if (tokens < this.burst - EPSILON) {
      // Kept until it has refilled (at least 1 ms: the bucket lacks more than EPSILON of a token).
      const ttl = Math.ceil((this.burst - tokens) * this.refillMs);
      this.levels.set(key, { tokens, atMs: nowMs }, { ttl, start: nowMs });
    } else {
      this.levels.delete(key);
    }
  }
}

/** Attempts that may wait at once for others to end, over all keys; past it they are refused. */
const MAX_WAITING = 256;
/** Attempts that may wait at once on one account or one address. */
const MAX_WAITING_PER_KEY = 32;

export class LoginLimiter {
  private readonly accounts: Buckets;
  private readonly addresses: Buckets;
  private readonly now: () => number;
  /** Attempts begun and not yet ended, per account key and per address key. */
  private readonly inFlight = new Map<string, number>();
  /** Wake-ups of the attempts waiting for one in flight to end, per key they wait on. */
  private readonly waiting = new Map<string, Set<(ended: boolean) => void>>();
  private waitingCount = 0;

  constructor(options: LoginLimiterOptions) {
    const { burst, refillMs, maxEntries = 50_000 } = options;
    if (!(burst >= 1) || !(refillMs > 0) || !(maxEntries >= 1)) throw new RangeError('burst, refillMs and maxEntries must be positive');
    this.now = options.now ?? (() => performance.now());
    this.accounts = new Buckets(burst, refillMs, maxEntries, this.now);
    this.addresses = new Buckets(burst, refillMs, maxEntries, this.now);
  }

  /** Built from the config settings (PEEKD_LOGIN_FAILURE_BURST, PEEKD_LOGIN_FAILURE_REFILL_MS). */
  static fromConfig(config: { loginFailureBurst: number; loginFailureRefillMs: number }, now?: () => number): LoginLimiter {
    return new LoginLimiter({ burst: config.loginFailureBurst, refillMs: config.loginFailureRefillMs, now });
  }

  /** Buckets held (for the bound on memory). */
  get size(): { accounts: number; addresses: number } {
    return { accounts: this.accounts.size, addresses: this.addresses.size };
  }

  /**
   * Before checking a password: takes a token from the account's bucket and the address's,
   * or, if either is empty, takes none and says how long to wait for both to hold one.
   * The attempt then ends in exactly one of succeeded, failed or abandoned.
   */
  begin(account: string, address: string | null): LoginGate {
    const nowMs = this.now();
    const waitMs = Math.max(this.accounts.waitMs(account, nowMs), address === null ? 0 : this.addresses.waitMs(address, nowMs));
    if (waitMs > 0) return { allowed: false, retryAfterMs: waitMs };
    this.accounts.add(account, -1, nowMs);
    if (address !== null) this.addresses.add(address, -1, nowMs);
    for (const key of keysOf(account, address)) this.count(key, 1);
    return { allowed: true };
  }

  /**
   * begin, but an attempt refused only because others still in flight hold the tokens
   * (a success gives its tokens back) waits for one of those to end, at most `maxWaitMs`,
   * and tries again. Refused at once when a bucket it needs was emptied by failures alone
   * (no attempt under that bucket's key is in flight).
   */
  async admit(account: string, address: string | null, maxWaitMs = 10_000): Promise<LoginGate> {
    const deadline = performance.now() + maxWaitMs;
    const [onAccount, onAddress] = keysOf(account, address);
    for (;;) {
      const gate = this.begin(account, address);
      if (gate.allowed) return gate;
      const nowMs = this.now();
      // The keys whose buckets are empty: each must have attempts in flight to wait on.
      const empty = [this.accounts.waitMs(account, nowMs) > 0 ? onAccount : undefined, address !== null && this.addresses.waitMs(address, nowMs) > 0 ? onAddress : undefined].filter(
        (k): k is string => k !== undefined,
      );
      const left = deadline - performance.now();
      if (empty.length === 0 || empty.some((k) => !this.inFlight.has(k)) || left <= 0) return gate;
      if (this.waitingCount >= MAX_WAITING || empty.some((k) => (this.waiting.get(k)?.size ?? 0) >= MAX_WAITING_PER_KEY)) return gate;
      const woken = await new Promise<boolean>((resolve) => {
        const wake = (ended: boolean) => {
          clearTimeout(timer);
          for (const k of empty) {
            const set = this.waiting.get(k);
            set?.delete(wake);
            if (set?.size === 0) this.waiting.delete(k);
          }
          this.waitingCount--;
          resolve(ended);
        };
        const timer = setTimeout(() => wake(false), left);
        for (const k of empty) {
          let set = this.waiting.get(k);
          if (!set) this.waiting.set(k, (set = new Set()));
          set.add(wake);
        }
        this.waitingCount++;
      });
      if (!woken) return this.begin(account, address);
    }
  }

  /** The password was right: a success costs nothing, so both tokens come back. */
  succeeded(account: string, address: string | null): void {
    this.giveBack(account, address);
    this.ended(account, address);
  }

  /** The password was wrong: the tokens stay spent. */
  failed(account: string, address: string | null): void {
    this.ended(account, address);
  }

  /** The password was never checked (the hashing queue was full, the server failed). */
  abandoned(account: string, address: string | null): void {
    this.giveBack(account, address);
    this.ended(account, address);
  }

  private giveBack(account: string, address: string | null): void {
    const nowMs = this.now();
    this.accounts.add(account, 1, nowMs);
    if (address !== null) this.addresses.add(address, 1, nowMs);
  }

  /** An attempt ended: it leaves the in-flight counts, and what waited on its keys tries again. */
  private ended(account: string, address: string | null): void {
    const woken = new Set<(ended: boolean) => void>();
    for (const key of keysOf(account, address)) {
      this.count(key, -1);
      for (const wake of this.waiting.get(key) ?? []) woken.add(wake);
    }
    for (const wake of woken) wake(true);
  }

  private count(key: string, delta: number): void {
    const n = (this.inFlight.get(key) ?? 0) + delta;
    if (n > 0) this.inFlight.set(key, n);
    else this.inFlight.delete(key);
  }
}

/** The in-flight keys of an attempt: its account's, and its address's unless the address is exempt (null). */
function keysOf(account: string, address: string | null): string[] {
  return address === null ? [`a\u0000${account}`] : [`a\u0000${account}`, `i\u0000${address}`];
}

/**
 * The key a client address is limited under: IPv4 as it is (IPv4-mapped IPv6 too), IPv6
 * by its /64, since one host commonly holds a whole /64 and could otherwise rotate through
 * addresses without end.
 */
export function addressKey(ip: string): string {
  if (!ipaddr.isValid(ip)) return ip;
  let addr = ipaddr.parse(ip);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
  if (addr.kind() === 'ipv4') return addr.toString();
  const parts = (addr as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString()}/64`;
}

/** The key an account is limited under; an over-long name (no valid user ID is) by its digest. */
export function accountKey(userId: string): string {
  return Buffer.byteLength(userId, 'utf8') <= 255 ? userId : `sha256:${createHash('sha256').update(userId).digest('base64url')}`;
}

/**
 * Guest registrations per client address (POST /register?kind=guest needs no credentials):
 * a token bucket per address, PEEKD_GUEST_REGISTRATION_BURST at once and one more every
 * PEEKD_GUEST_REGISTRATION_REFILL_MS.
 */
export class GuestRegistrationLimiter {
  private readonly addresses: Buckets;
  private readonly now: () => number;

  constructor(options: { burst: number; refillMs: number; maxEntries?: number; now?: () => number }) {
    const { burst, refillMs, maxEntries = 50_000 } = options;
    if (!(burst >= 1) || !(refillMs > 0) || !(maxEntries >= 1)) throw new RangeError('burst, refillMs and maxEntries must be positive');
    this.now = options.now ?? (() => performance.now());
    this.addresses = new Buckets(burst, refillMs, maxEntries, this.now);
  }

  static fromConfig(config: { guestRegistrationBurst: number; guestRegistrationRefillMs: number }, now?: () => number): GuestRegistrationLimiter {
    return new GuestRegistrationLimiter({ burst: config.guestRegistrationBurst, refillMs: config.guestRegistrationRefillMs, now });
  }

  /** Takes a token for one registration from `address`, or says how long to wait for one. */
  take(address: string): LoginGate {
    const nowMs = this.now();
    const waitMs = this.addresses.waitMs(address, nowMs);
    if (waitMs > 0) return { allowed: false, retryAfterMs: waitMs };
    this.addresses.add(address, -1, nowMs);
    return { allowed: true };
  }
}
