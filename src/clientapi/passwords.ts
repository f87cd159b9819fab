// Password hashing with scrypt (memory-hard, from node:crypto). Format:
//   scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>
// Every hash costs 16 MiB and tens of ms on a libuv thread, so hashes run on a bounded
// pool (PasswordHasher): a few at once, a bounded queue behind them, and past that the
// caller is told to come back later instead of the process growing without bound.
import { randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';

const LOG_N = 14; // 2^14 × 128 × r = 16 MiB per hash
const R = 8;
const P = 1;
const KEY_LEN = 32;
/** What one hash with our parameters needs (OpenSSL: 128·r·(N + p + 2) bytes), with room to spare. */
const MAXMEM_BYTES = 32 * 1024 * 1024;

let computed = 0;

/** scrypt hashes computed in this process since it started (tests count them). */
export function passwordHashCount(): number {
  return computed;
}

interface ScryptParams {
  logN: number;
  r: number;
  p: number;
}

/** Parameters we agree to compute: well-formed and within MAXMEM_BYTES. */
function acceptable({ logN, r, p }: ScryptParams): boolean {
  return Number.isInteger(logN) && logN >= 10 && logN <= 20 && Number.isInteger(r) && r >= 1 && r <= 32 && Number.isInteger(p) && p >= 1 && p <= 4 && 128 * r * (2 ** logN + p + 2) <= MAXMEM_BYTES;
}

/** The asynchronous scrypt: it runs on the libuv threadpool, never on the event loop. */
function scrypt(password: string, salt: Buffer, keylen: number, { logN, r, p }: ScryptParams): Promise<Buffer> {
  computed++;
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, { N: 2 ** logN, r, p, maxmem: MAXMEM_BYTES }, (err, key) => (err ? reject(err) : resolve(key))));
}

async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, KEY_LEN, { logN: LOG_N, r: R, p: P });
  return `scrypt$${LOG_N}$${R}$${P}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, logN, r, p, saltB64, hashB64] = parts as [string, string, string, string, string, string];
  const params = { logN: Number(logN), r: Number(r), p: Number(p) };
  const expected = Buffer.from(hashB64, 'base64');
  if (!acceptable(params) || expected.length === 0 || expected.length > 64) return false;
  const actual = await scrypt(password, Buffer.from(saltB64, 'base64'), expected.length, params);
  return timingSafeEqual(actual, expected);
}

/**
 * A well-formed hash with the current parameters that no password matches (its key is all
 * zeros): verifying against it costs exactly what a real check costs.
 */
export const UNMATCHABLE_HASH = `scrypt$${LOG_N}$${R}$${P}$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(KEY_LEN).toString('base64')}`;

/** The hashing queue is full: answer 429 and let the client come back after `retryAfterMs`. */
export class PasswordHasherBusyError extends Error {
  override readonly name = 'PasswordHasherBusyError';
  constructor(readonly retryAfterMs: number) {
    super('too many password hashes waiting');
  }
}

export interface PasswordHasherOptions {
  /** Hashes computed at once (PEEKD_PASSWORD_HASH_CONCURRENCY). */
  concurrency: number;
  /** Hashes that may wait for a turn; more are refused. Default: 64 × concurrency. */
  maxQueued?: number;
}

/** Hashes and verifies passwords, at most `concurrency` at once, with a bounded queue. */
export class PasswordHasher {
  readonly concurrency: number;
  readonly maxQueued: number;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** Moving average of one hash's duration, for retry_after_ms. */
  private averageHashMs = 50;

  constructor(options: PasswordHasherOptions = { concurrency: 2 }) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new RangeError('concurrency must be a positive integer');
    this.concurrency = options.concurrency;
    this.maxQueued = options.maxQueued ?? 64 * options.concurrency;
  }

  /** Built from the config settings (PEEKD_PASSWORD_HASH_CONCURRENCY). */
  static fromConfig(config: { passwordHashConcurrency: number }): PasswordHasher {
    return new PasswordHasher({ concurrency: config.passwordHashConcurrency });
  }

  /** Hashes being computed and waiting right now. */
  get load(): { running: number; queued: number } {
    return { running: this.running, queued: this.waiting.length };
  }

  /** A new stored hash of `password`. Throws PasswordHasherBusyError when the queue is full. */
  hash(password: string): Promise<string> {
    return this.run(() => hashPassword(password));
  }

  /** Whether `password` matches `stored`. Throws PasswordHasherBusyError when the queue is full. */
  verify(password: string, stored: string): Promise<boolean> {
    return this.run(() => verifyPassword(password, stored));
  }

  private async run<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    const started = performance.now();
    try {
      return await work();
    } finally {
      this.averageHashMs = 0.8 * this.averageHashMs + 0.2 * (performance.now() - started);
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.concurrency) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueued) {
      // Roughly when the queue will have room again: the time to work it off.
      const retryAfterMs = Math.max(100, Math.ceil(((this.waiting.length + this.running) / this.concurrency) * this.averageHashMs));
      return Promise.reject(new PasswordHasherBusyError(retryAfterMs));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot to the next waiter (so `running` stays), or frees it. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}
