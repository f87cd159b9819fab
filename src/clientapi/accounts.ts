// Accounts, devices and access tokens. Tokens are 256 random bits, stored only as their
// SHA-256; a small in-memory cache spares the database on every request.
import * as crypto from 'node:crypto';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, DrizzleQueryError, eq, inArray } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Db } from '../store/db.ts';
import { accessTokens, accounts, devices } from '../store/schema.ts';
import { UNMATCHABLE_HASH, type PasswordHasher } from './passwords.ts';

export interface Session {
  userId: string;
  deviceId: string;
  /** A guest account (POST /register?kind=guest): what it may do is limited. */
  isGuest?: boolean;
}

export interface NewSession extends Session {
  accessToken: string;
}

export class UserInUseError extends Error {
  override readonly name = 'UserInUseError';
}

const LOCALPART = /^[a-z0-9._=\-/+]+$/;

/** A localpart this server hands out: the grammar's lowercase set, and a user ID within 255 bytes. */
export function isValidNewLocalpart(localpart: string, serverName = ''): boolean {
  return localpart.length > 0 && LOCALPART.test(localpart) && Buffer.byteLength(`@${localpart}:${serverName}`, 'utf8') <= 255;
}

// One-shot `crypto.hash` (Node 20.12+) is 2–3× faster than a Hash object for a token, and
// every authenticated request hashes one; older Node 20 releases take the long way.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64url') => string }).hash;
function tokenHash(token: string): string {
  return oneShot ? oneShot('sha256', token, 'base64url') : createHash('sha256').update(token).digest('base64url');
}

function randomId(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

export function generateDeviceId(): string {
  return randomBytes(6).toString('hex').toUpperCase();
}

/**
 * Runs a query whose parameters hold a secret (a password hash, a token hash). Drizzle's
 * error message lists the parameters, and a failed request's error is logged: rethrow
 * without them, keeping the driver's error as the cause (transient-error checks read it).
 */
async function withheldParams<T>(what: string, query: () => Promise<T>): Promise<T> {
  try {
    return await query();
  } catch (err) {
    // The driver's error, not Drizzle's (whose message carries the parameters), is the cause.
    // eslint-disable-next-line preserve-caught-error
    if (err instanceof DrizzleQueryError) throw new Error(`${what} failed (query parameters withheld)`, { cause: err.cause });
    throw err;
  }
}

export class AccountStore {
  private static readonly CACHE_TTL_MS = 60_000;
  private static readonly CACHE_MAX = 50_000;
  /**
   * Sessions by token hash, each for CACHE_TTL_MS after its lookup (on the injected clock),
   * the least recently used going first past CACHE_MAX. A token revoked here (logout, a
   * device removed or reused) is dropped at once; one revoked by another process stays
   * valid here until its entry expires.
   */
  private readonly cache = new LRUCache<string, Session>({
    max: AccountStore.CACHE_MAX,
    ttl: AccountStore.CACHE_TTL_MS,
    ttlAutopurge: false,
    // The injected clock, read on every check (no caching of "now" between checks).
    perf: { now: () => this.now() },
    ttlResolution: 0,
  });
  /** PEEKD_GUEST_ACCESS: off refuses guests everywhere, their existing tokens included (see requireAuth). */
  guestsAllowed = true;
  /** Counts revocations, so a lookup that raced one is not cached (it may have read the revoked token). */
  private revocations = 0;

  constructor(
    private readonly db: Db,
    readonly serverName: string,
    private readonly now: () => number = Date.now,
  ) {}

  userIdFor(localpart: string): string {
    return `@${localpart}:${this.serverName}`;
  }

  async exists(userId: string): Promise<boolean> {
    const rows = await this.db.select({ u: accounts.userId }).from(accounts).where(eq(accounts.userId, userId));
    return rows.length > 0;
  }

  /**
   * Creates the account; throws UserInUseError when the user ID is taken. A password is
   * hashed on `hasher` (which throws PasswordHasherBusyError when its queue is full).
   */
  register(localpart: string | undefined, password: undefined): Promise<string>;
  register(localpart: string | undefined, password: string | undefined, hasher: PasswordHasher): Promise<string>;
  async register(localpart: string | undefined, password: string | undefined, hasher?: PasswordHasher): Promise<string> {
    const userId = this.userIdFor(localpart ?? `u${randomBytes(6).toString('hex')}`);
    let passwordHash: string | null = null;
    if (password !== undefined) {
      if (!hasher) throw new TypeError('register: a password needs a PasswordHasher');
      passwordHash = await hasher.hash(password);
    }
    const inserted = await withheldParams('inserting the account', () =>
      this.db.insert(accounts).values({ userId, passwordHash, createdAt: this.now() }).onConflictDoNothing().returning({ userId: accounts.userId }),
    );
    if (inserted.length === 0) throw new UserInUseError(`${userId} is taken`);
    return userId;
  }

  /**
   * A new guest account: no password, a generated user ID (`@guest_…`), limited to what
   * guests may do until upgraded.
   */
  async registerGuest(): Promise<string> {
    for (;;) {
      const userId = this.userIdFor(`guest_${randomBytes(8).toString('hex')}`);
      const inserted = await this.db.insert(accounts).values({ userId, passwordHash: null, createdAt: this.now(), isGuest: true }).onConflictDoNothing().returning({ userId: accounts.userId });
      if (inserted.length > 0) return userId;
    }
  }

  /**
   * Makes the guest `userId` a full account with `password` (hashed on `hasher`), keeping
   * its user ID, devices and tokens. False when the user is not (or no longer) a guest: an
   * account is upgraded once.
   */
  async upgradeGuest(userId: string, password: string | undefined, hasher: PasswordHasher): Promise<boolean> {
    const passwordHash = password === undefined ? null : await hasher.hash(password);
    const updated = await withheldParams('upgrading the guest account', () =>
      this.db
        .update(accounts)
        .set({ isGuest: false, passwordHash })
        .where(and(eq(accounts.userId, userId), eq(accounts.isGuest, true)))
        .returning({ userId: accounts.userId }),
    );
    // Its cached sessions say "guest": read them again.
    this.forgetDevice(userId, undefined);
    return updated.length > 0;
  }

  /** Which of `userIds` are guest accounts of this server. */
  async guestsAmong(userIds: string[]): Promise<string[]> {
    if (userIds.length === 0) return [];
    const rows = await this.db
      .select({ userId: accounts.userId })
      .from(accounts)
      .where(and(inArray(accounts.userId, userIds), eq(accounts.isGuest, true)));
    return rows.map((r) => r.userId);
  }

  /**
   * False when the user does not exist, has no password, or the password is wrong. Every
   * call computes exactly one hash on `hasher`, so timing does not reveal which users exist.
   */
  async checkPassword(userId: string, password: string, hasher: PasswordHasher): Promise<boolean> {
    const [row] = await this.db.select({ hash: accounts.passwordHash }).from(accounts).where(eq(accounts.userId, userId));
    if (!row?.hash) {
      await hasher.verify(password, UNMATCHABLE_HASH);
      return false;
    }
    return hasher.verify(password, row.hash);
  }

  /**
   * Creates (or reuses) a device and issues a new access token for it. Reusing a device
   * invalidates the tokens it held before (client-server API, "Relationship between
   * access tokens and devices").
   */
  async createSession(userId: string, deviceId: string | undefined, displayName?: string): Promise<NewSession> {
    const device = deviceId ?? generateDeviceId();
    const now = this.now();
    const accessToken = `pkd_${randomId(32)}`;
    // The token hash is a secret's digest: keep it out of error messages (and so out of logs).
    await withheldParams('creating the session', () =>
      this.db.transaction(async (tx) => {
        await tx
          .insert(devices)
          .values({ userId, deviceId: device, displayName: displayName ?? null, createdAt: now, lastSeenAt: now })
          .onConflictDoUpdate({ target: [devices.userId, devices.deviceId], set: { lastSeenAt: now } });
        if (deviceId !== undefined) await tx.delete(accessTokens).where(and(eq(accessTokens.userId, userId), eq(accessTokens.deviceId, device)));
        await tx.insert(accessTokens).values({ tokenHash: tokenHash(accessToken), userId, deviceId: device, createdAt: now });
      }),
    );
    if (deviceId !== undefined) this.forgetDevice(userId, device);
    return { userId, deviceId: device, accessToken };
  }

  /** Drops the cached sessions of one device, or of every device of the user (deviceId undefined). */
  private forgetDevice(userId: string, deviceId: string | undefined): void {
    this.revocations++;
    // Entries already expired are skipped by the walk, and are never answered anyway.
    const revoked: string[] = [];
    for (const [hash, s] of this.cache.entries()) if (s.userId === userId && (deviceId === undefined || s.deviceId === deviceId)) revoked.push(hash);
    for (const hash of revoked) this.cache.delete(hash);
  }

  /** The key the cache and the database know a token by (SHA-256): hash once, look up as often as needed. */
  hashToken(token: string): string {
    return tokenHash(token);
  }

  /**
   * The session of a token (by its hashToken) this process has in its cache (a copy), or
   * undefined when it must ask the database. Always the cache as it is now, so a revoked
   * token is never answered.
   */
  cachedSessionOfHash(hash: string): Session | undefined {
    const cached = this.cache.get(hash);
    return cached ? { ...cached } : undefined;
  }

  async authenticate(token: string): Promise<Session | null> {
    const hash = tokenHash(token);
    const cached = this.cache.get(hash);
    if (cached) return { ...cached };
    const revocations = this.revocations;
    const [row] = await withheldParams('looking up the access token', () =>
      this.db
        .select({ tokenHash: accessTokens.tokenHash, userId: accessTokens.userId, deviceId: accessTokens.deviceId, isGuest: accounts.isGuest })
        .from(accessTokens)
        .leftJoin(accounts, eq(accounts.userId, accessTokens.userId))
        .where(eq(accessTokens.tokenHash, hash)),
    );
    // The lookup is by hash; compare the hashes in constant time all the same.
    if (!row || !timingSafeEqual(Buffer.from(row.tokenHash), Buffer.from(hash))) return null;
    const session: Session = row.isGuest ? { userId: row.userId, deviceId: row.deviceId, isGuest: true } : { userId: row.userId, deviceId: row.deviceId };
    if (this.revocations === revocations) this.cache.set(hash, session);
    return { ...session };
  }

  /** Deletes the device and every token it holds. */
  async removeDevice(userId: string, deviceId: string): Promise<void> {
    await this.db.delete(accessTokens).where(and(eq(accessTokens.userId, userId), eq(accessTokens.deviceId, deviceId)));
    await this.db.delete(devices).where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
    this.forgetDevice(userId, deviceId);
  }

  async devicesOf(userId: string): Promise<string[]> {
    const rows = await this.db.select({ d: devices.deviceId }).from(devices).where(eq(devices.userId, userId));
    return rows.map((r) => r.d);
  }
}
