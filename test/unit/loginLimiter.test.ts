// The failed-login limiter as a specification, on a fake clock: a burst per account and
// per address, one token back per refill period, successes free, memory bounded.
import { describe, expect, it } from 'vitest';
import { accountKey, addressKey, LoginLimiter, type LoginGate } from '../../src/clientapi/loginLimiter.ts';

function limiter(options: { burst?: number; refillMs?: number; maxEntries?: number } = {}) {
  let nowMs = 1_000_000;
  const l = new LoginLimiter({ burst: options.burst ?? 5, refillMs: options.refillMs ?? 6000, maxEntries: options.maxEntries, now: () => nowMs });
  return {
    l,
    advance: (ms: number) => void (nowMs += ms),
    /** One wrong password: begin, then (when allowed) failed. */
    fail(account: string, address: string | null): LoginGate {
      const gate = l.begin(account, address);
      if (gate.allowed) l.failed(account, address);
      return gate;
    },
  };
}

const refused = (retryAfterMs: number): LoginGate => ({ allowed: false, retryAfterMs });
const allowed: LoginGate = { allowed: true };

describe('login limiter', () => {
  it('allows a burst of failures, then refuses with the time until one token is back', () => {
    const { fail, advance } = limiter();
    for (let i = 0; i < 5; i++) expect(fail('@a:hs', '10.0.0.1')).toEqual(allowed);
    expect(fail('@a:hs', '10.0.0.1')).toEqual(refused(6000));
    advance(2500);
    expect(fail('@a:hs', '10.0.0.1')).toEqual(refused(3500));
    advance(3499);
    expect(fail('@a:hs', '10.0.0.1')).toEqual(refused(1));
    advance(1);
    expect(fail('@a:hs', '10.0.0.1')).toEqual(allowed);
    expect(fail('@a:hs', '10.0.0.1')).toEqual(refused(6000));
  });

  it('refills one token per period up to the burst, never beyond', () => {
    const { fail, advance } = limiter({ burst: 3, refillMs: 1000 });
    for (let i = 0; i < 3; i++) expect(fail('@a:hs', 'x')).toEqual(allowed);
    advance(2000);
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(refused(1000));
    advance(60_000);
    for (let i = 0; i < 3; i++) expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(refused(1000));
  });

  it('a refused attempt takes no token, so it does not push the wait further out', () => {
    const { fail, advance } = limiter({ burst: 1, refillMs: 1000 });
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    for (let i = 0; i < 10; i++) {
      advance(50);
      expect(fail('@a:hs', 'x')).toEqual(refused(1000 - 50 * (i + 1)));
    }
  });

  it('limits an account from any address: many addresses cannot guess one password', () => {
    const { fail } = limiter();
    for (let i = 0; i < 5; i++) expect(fail('@victim:hs', `10.0.0.${i}`)).toEqual(allowed);
    expect(fail('@victim:hs', '10.0.0.99')).toEqual(refused(6000));
    // Other accounts, from those addresses too, are unaffected.
    expect(fail('@other:hs', '10.0.0.0')).toEqual(allowed);
  });

  it('limits an address across accounts: one client cannot spray many accounts', () => {
    const { fail, advance } = limiter();
    for (let i = 0; i < 5; i++) expect(fail(`@u${i}:hs`, '192.0.2.7')).toEqual(allowed);
    expect(fail('@fresh:hs', '192.0.2.7')).toEqual(refused(6000));
    // Another address may still try those accounts.
    expect(fail('@u0:hs', '192.0.2.8')).toEqual(allowed);
    advance(6000);
    expect(fail('@fresh:hs', '192.0.2.7')).toEqual(allowed);
  });

  it('answers the longer of the two waits when both buckets are empty', () => {
    const { fail, advance } = limiter({ burst: 2, refillMs: 1000 });
    expect(fail('@a:hs', 'addr')).toEqual(allowed);
    advance(400);
    expect(fail('@a:hs', 'addr')).toEqual(allowed);
    // The account and the address were drained at the same moments: 1000 - 400 ms for both.
    expect(fail('@a:hs', 'addr')).toEqual(refused(600));
    // A second address drains later; its own wait is the longer one for @b.
    expect(fail('@b:hs', 'other')).toEqual(allowed);
    advance(300);
    expect(fail('@b:hs', 'other')).toEqual(allowed);
    advance(100);
    // @a's bucket needs 200 ms more, the address 'other' 600 ms: the answer is the longer.
    expect(fail('@a:hs', 'other')).toEqual(refused(600));
  });

  it('a success costs nothing: its tokens come back, and it works while tokens remain', () => {
    const { l, fail } = limiter();
    for (let i = 0; i < 4; i++) expect(fail('@a:hs', 'x')).toEqual(allowed);
    for (let i = 0; i < 10; i++) {
      expect(l.begin('@a:hs', 'x')).toEqual(allowed);
      l.succeeded('@a:hs', 'x');
    }
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(refused(6000));
  });

  it('an abandoned attempt (never checked) gives its tokens back', () => {
    const { l, fail } = limiter({ burst: 1 });
    expect(l.begin('@a:hs', 'x')).toEqual(allowed);
    l.abandoned('@a:hs', 'x');
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(refused(6000));
  });

  it('concurrent attempts reserve their tokens: only the burst gets through before any finishes', () => {
    const { l } = limiter();
    const gates = Array.from({ length: 40 }, () => l.begin('@a:hs', 'x'));
    expect(gates.filter((g) => g.allowed)).toHaveLength(5);
    expect(gates.slice(5).every((g) => !g.allowed && g.retryAfterMs === 6000)).toBe(true);
  });

  it('forgets buckets once they are full again', () => {
    const { fail, advance, l } = limiter({ burst: 2, refillMs: 1000 });
    for (let i = 0; i < 100; i++) fail(`@u${i}:hs`, `a${i}`);
    expect(l.size).toEqual({ accounts: 100, addresses: 100 });
    advance(2000);
    fail('@late:hs', 'late');
    expect(l.size).toEqual({ accounts: 1, addresses: 1 });
  });

  it('keeps a bucket until the moment it has refilled, and no longer', () => {
    const { fail, advance, l } = limiter({ burst: 2, refillMs: 1000 });
    fail('@a:hs', 'x');
    advance(500);
    fail('@a:hs', 'x'); // 0.5 tokens left: full again 1500 ms from now
    advance(1499);
    expect(l.size).toEqual({ accounts: 1, addresses: 1 });
    advance(2);
    expect(l.size).toEqual({ accounts: 0, addresses: 0 });
    // Forgotten means full: the whole burst again.
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(fail('@a:hs', 'x')).toEqual(refused(1000));
  });

  it('a token given back extends nothing: the bucket is forgotten when it is full again', () => {
    const { l, advance } = limiter({ burst: 2, refillMs: 1000 });
    expect(l.begin('@a:hs', 'x')).toEqual(allowed);
    expect(l.begin('@a:hs', 'x')).toEqual(allowed);
    advance(300);
    l.succeeded('@a:hs', 'x'); // 0.3 + 1 tokens: full again in 700 ms
    advance(699);
    expect(l.size).toEqual({ accounts: 1, addresses: 1 });
    l.succeeded('@a:hs', 'x'); // full now: forgotten at once
    expect(l.size).toEqual({ accounts: 0, addresses: 0 });
  });

  it('holds at most maxEntries buckets of each kind, however many names a stranger sends', () => {
    const { fail, l } = limiter({ burst: 1, maxEntries: 1000 });
    for (let i = 0; i < 20_000; i++) fail(`@guess${i}:hs`, `addr${i}`);
    expect(l.size).toEqual({ accounts: 1000, addresses: 1000 });
    // The newest buckets are the ones kept; the oldest were let go.
    expect(fail('@guess19999:hs', 'elsewhere')).toEqual(refused(6000));
    expect(fail('@guess0:hs', 'elsewhere')).toEqual(allowed);
  });

  it('evicts the least recently active bucket past the cap', () => {
    const { fail, l } = limiter({ burst: 2, maxEntries: 3 });
    expect(fail('@victim:hs', 'a0')).toEqual(allowed);
    fail('@u1:hs', 'a1');
    fail('@u2:hs', 'a2');
    // The victim's bucket is touched again, so @u1's is now the oldest.
    expect(fail('@victim:hs', 'a9')).toEqual(allowed);
    fail('@u3:hs', 'a3');
    expect(l.size.accounts).toBe(3);
    expect(fail('@victim:hs', 'a10')).toEqual(refused(6000));
  });
});

describe('logins arriving together (admit)', () => {
  it('an attempt finding the tokens held by attempts in flight waits for them: successes let every one through', async () => {
    const { l } = limiter({ burst: 2 });
    expect(await l.admit('@a:hs', 'x')).toEqual(allowed);
    expect(await l.admit('@a:hs', 'x')).toEqual(allowed);
    let third: LoginGate | undefined;
    const waiting = l.admit('@a:hs', 'x').then((g) => (third = g));
    await Promise.resolve();
    expect(third).toBeUndefined();
    l.succeeded('@a:hs', 'x');
    await waiting;
    expect(third).toEqual(allowed);
    l.succeeded('@a:hs', 'x');
    l.succeeded('@a:hs', 'x');
    expect(l.size).toEqual({ accounts: 0, addresses: 0 });
  });

  it('when the attempts in flight fail, the waiting one is refused (failures are what the limit counts)', async () => {
    const { l } = limiter({ burst: 2 });
    await l.admit('@a:hs', 'x');
    await l.admit('@a:hs', 'x');
    const waiting = l.admit('@a:hs', 'x');
    l.failed('@a:hs', 'x');
    l.failed('@a:hs', 'x');
    expect(await waiting).toEqual(refused(6000));
  });

  it('a woken attempt that still finds no token waits again, for the next attempt to end', async () => {
    const { l } = limiter({ burst: 2 });
    await l.admit('@a:hs', 'x');
    await l.admit('@a:hs', 'x');
    let third: LoginGate | undefined;
    const waiting = l.admit('@a:hs', 'x').then((g) => (third = g));
    l.failed('@a:hs', 'x');
    await new Promise((r) => setTimeout(r, 5));
    expect(third).toBeUndefined();
    l.succeeded('@a:hs', 'x');
    await waiting;
    expect(third).toEqual(allowed);
  });

  it('does not wait when the bucket it lacks was emptied by failures, whatever else is in flight', async () => {
    const { l, fail } = limiter({ burst: 2 });
    // The address's two tokens spent on failures; another account's attempt in flight from elsewhere.
    expect(fail('@x:hs', 'nat')).toEqual(allowed);
    expect(fail('@y:hs', 'nat')).toEqual(allowed);
    expect(await l.admit('@a:hs', 'elsewhere')).toEqual(allowed);
    const t0 = performance.now();
    expect(await l.admit('@a:hs', 'nat')).toEqual(refused(6000));
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it('refuses at once when no attempt is in flight, and gives up waiting after maxWaitMs', async () => {
    const { l, fail } = limiter({ burst: 1 });
    expect(fail('@a:hs', 'x')).toEqual(allowed);
    expect(await l.admit('@a:hs', 'x')).toEqual(refused(6000));
    const { l: busy } = limiter({ burst: 1 });
    expect(await busy.admit('@b:hs', 'y')).toEqual(allowed);
    expect(await busy.admit('@b:hs', 'y', 20)).toEqual(refused(6000));
  });
});

describe('an exempt address (null)', () => {
  it('is limited per account only', async () => {
    const { l, fail } = limiter({ burst: 2 });
    for (let i = 0; i < 6; i++) expect(fail(`@u${i}:hs`, null)).toEqual(allowed);
    expect(fail('@u0:hs', null)).toEqual(allowed);
    expect(fail('@u0:hs', null)).toEqual(refused(6000));
    expect(await l.admit('@other:hs', null)).toEqual(allowed);
    l.succeeded('@other:hs', null);
    expect(l.size.addresses).toBe(0);
  });
});

describe('limiter keys', () => {
  it('an address key: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
    expect(addressKey('203.0.113.9')).toBe('203.0.113.9');
    expect(addressKey('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(addressKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2::1')).toBe(addressKey('2001:db8:1:2:ffff::9'));
    expect(addressKey('2001:db8:1:3::1')).not.toBe(addressKey('2001:db8:1:2::1'));
    expect(addressKey('not an address')).toBe('not an address');
  });

  it('an account key: the user ID, or a digest of an over-long name', () => {
    expect(accountKey('@alice:hs')).toBe('@alice:hs');
    const long = `@${'x'.repeat(10_000)}:hs`;
    expect(accountKey(long)).toMatch(/^sha256:[A-Za-z0-9_-]{43}$/);
    expect(accountKey(long)).toBe(accountKey(long));
  });
});
