// One store behind every rate-limited route. @fastify/rate-limit gives each route a store of
// its own, so a limit set on a route registered under several prefixes (`/v3/peek`, `/r0/peek`,
// `/unstable/org.matrix.msc2753/peek`) would give a client each prefix's budget again. Here
// every route counts in the same store, and a limit's key names its group instead
// (`peek\0<user>\0<device>`, `register\0<address>`): the library's own fixed-window counter,
// shared.
// @ts-expect-error — the library's store has no type declarations of its own.
import LocalStore from '@fastify/rate-limit/store/LocalStore.js';

interface Counted {
  current: number;
  ttl: number;
}

interface Store {
  incr(key: string, callback: (err: Error | null, result?: Counted) => void, timeWindow: number, max: number): void;
}

/** Keys (devices, addresses) remembered at once; past that the least recently seen start over. */
const KEYS = 100_000;

export class SharedRateLimitStore {
  private readonly local: Store;

  constructor(params: { continueExceeding?: boolean; exponentialBackoff?: boolean }) {
    this.local = new LocalStore(params.continueExceeding ?? false, params.exponentialBackoff ?? false, KEYS) as Store;
  }

  // The library always passes the route's window and maximum (its declared type leaves them out).
  incr(key: string, callback: (err: Error | null, result?: Counted) => void, timeWindow?: number, max?: number): void {
    this.local.incr(key, callback, timeWindow!, max!);
  }

  /** Every route's store is this one. */
  child(): SharedRateLimitStore {
    return this;
  }
}
