// Password guessing against a real peekd: failed logins are limited per account and per
// client address, refused guesses cost no hash, a flood of logins neither fails the
// server nor grows its memory, and closed registration keeps existing accounts working.
import { Agent, request as undiciRequest } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher, PasswordHasherBusyError, passwordHashCount } from '../../src/clientapi/passwords.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { request, TestUser, type MatrixResponse } from '../helpers/matrix.ts';

type Hs = Awaited<ReturnType<typeof startTestPeekd>>;
// Long enough that no token comes back while the burst is spent, even on a loaded machine
// (five scrypt hashes can take seconds there); the tests wait it out once each.
const REFILL_MS = 10_000;
const v3 = (path: string) => `/_matrix/client/v3${path}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function login(url: string, user: string, password: string): Promise<MatrixResponse> {
  return request(url, 'POST', v3('/login'), { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password } });
}

/** A login sent from another loopback address (127.0.0.0/8 is all local on Linux). */
async function loginFrom(agent: Agent, url: string, user: string, password: string): Promise<{ status: number; body: any }> {
  const r = await undiciRequest(url + v3('/login'), {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password }),
  });
  return { status: r.statusCode, body: await r.body.json() };
}

function expectLimited(r: { status: number; body: any }, password?: string) {
  expect({ status: r.status, errcode: r.body?.errcode }).toEqual({ status: 429, errcode: 'M_LIMIT_EXCEEDED' });
  expect(typeof r.body.error).toBe('string');
  expect(r.body.retry_after_ms).toBeGreaterThan(0);
  expect(r.body.retry_after_ms).toBeLessThanOrEqual(REFILL_MS);
  if (password) expect(JSON.stringify(r.body)).not.toContain(password);
}

function expectForbidden(r: { status: number; body: any }, password?: string) {
  expect({ status: r.status, errcode: r.body?.errcode }).toEqual({ status: 403, errcode: 'M_FORBIDDEN' });
  expect(typeof r.body.error).toBe('string');
  if (password) expect(JSON.stringify(r.body)).not.toContain(password);
}

describe('guessing one account’s password', () => {
  let hs: Hs;
  beforeAll(async () => {
    hs = await startTestPeekd({ env: { PEEKD_LOGIN_FAILURE_REFILL_MS: String(REFILL_MS) } });
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('after the burst every guess answers 429 at once, without hashing; the right password waits too, then works', async () => {
    const victim = await TestUser.register(hs.url, 'victim', 'the real one');
    const hashesBefore = passwordHashCount();
    const answers: { status: number; body: any; ms: number }[] = [];
    for (let i = 0; i < 40; i++) {
      const t0 = performance.now();
      const r = await login(hs.url, victim.userId, `guess-${i}`);
      answers.push({ ...r, ms: performance.now() - t0 });
    }
    // The default burst of 5 is checked; the other 35 were refused before any hash.
    answers.slice(0, 5).forEach((r, i) => expectForbidden(r, `guess-${i}`));
    answers.slice(5).forEach((r, i) => expectLimited(r, `guess-${i + 5}`));
    expect(passwordHashCount() - hashesBefore).toBe(5);
    const hashedMs = Math.min(...answers.slice(0, 5).map((a) => a.ms));
    const refusedMs = answers.slice(5).reduce((sum, a) => sum + a.ms, 0);
    expect(refusedMs).toBeLessThan((35 * hashedMs) / 2);

    // During the lockout the right password is refused too, and still costs no hash.
    const locked = await login(hs.url, victim.userId, 'the real one');
    expectLimited(locked, 'the real one');
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(passwordHashCount() - hashesBefore).toBe(5);

    await sleep(locked.body.retry_after_ms);
    const back = await login(hs.url, victim.userId, 'the real one');
    expect(back.status).toBe(200);
    expect(back.body.user_id).toBe(victim.userId);
    // A success costs no token: the next right password works at once as well.
    expect((await login(hs.url, victim.userId, 'the real one')).status).toBe(200);
  });

  it('the account stays limited from another address, while other accounts log in from there', async () => {
    const target = await TestUser.register(hs.url, 'target', 'target pw');
    const bystander = await TestUser.register(hs.url, 'bystander', 'bystander pw');
    // The guesses come from one address, the owner from another: the account is what is limited.
    const attacker = new Agent({ localAddress: '127.0.0.4' });
    const elsewhere = new Agent({ localAddress: '127.0.0.2' });
    try {
      for (let i = 0; i < 5; i++) expectForbidden(await loginFrom(attacker, hs.url, target.userId, `nope${i}`));
      expectLimited(await loginFrom(attacker, hs.url, target.userId, 'nope'));
      expectLimited(await loginFrom(elsewhere, hs.url, target.userId, 'target pw'));
      expect((await loginFrom(elsewhere, hs.url, bystander.userId, 'bystander pw')).status).toBe(200);
    } finally {
      await attacker.close();
      await elsewhere.close();
    }
  });
});

describe('right passwords arriving together', () => {
  let hs: Hs;
  beforeAll(async () => {
    hs = await startTestPeekd({ env: { PEEKD_LOGIN_FAILURE_REFILL_MS: String(REFILL_MS) } });
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('twice the burst of logins at once, from one address and to one account, all succeed (a test suite logging in its devices)', async () => {
    const user = await TestUser.register(hs.url, 'many', 'many pw');
    const others = await Promise.all([1, 2, 3].map((i) => TestUser.register(hs.url, `other${i}`, 'other pw')));
    const answers = await Promise.all([...Array.from({ length: 10 }, () => login(hs.url, user.userId, 'many pw')), ...others.map((o) => login(hs.url, o.userId, 'other pw'))]);
    expect(answers.map((a) => a.status)).toEqual(Array(13).fill(200));
    expect(new Set(answers.map((a) => a.body.device_id)).size).toBe(13);
  });

  it('the local machine (127.0.0.1, by default) is limited per account only: wrong passwords for many accounts do not lock out another', async () => {
    const user = await TestUser.register(hs.url, 'local', 'local pw');
    for (let i = 0; i < 8; i++) expectForbidden(await login(hs.url, `nobody-local${i}`, 'wrong'));
    expect((await login(hs.url, user.userId, 'local pw')).status).toBe(200);
    // Another loopback address is a client like any other.
    const other = new Agent({ localAddress: '127.0.0.7' });
    try {
      for (let i = 0; i < 5; i++) expectForbidden(await loginFrom(other, hs.url, `nobody-other${i}`, 'wrong'));
      expectLimited(await loginFrom(other, hs.url, user.userId, 'local pw'));
    } finally {
      await other.close();
    }
  });
});

describe('guessing across many accounts from one address', () => {
  let hs: Hs;
  beforeAll(async () => {
    // The local machine is limited per address too here (by default it is exempt: below).
    hs = await startTestPeekd({ env: { PEEKD_LOGIN_FAILURE_REFILL_MS: String(REFILL_MS), PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES: 'none' } });
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('known and unknown users alike: each failure hashes once, and after the burst the address is refused for any account', async () => {
    const users = [];
    for (let i = 0; i < 3; i++) users.push(await TestUser.register(hs.url, `real${i}`, `pw${i}`));
    const hashesBefore = passwordHashCount();
    // Real accounts and names nobody holds answer the same way, at the same cost.
    const names = [users[0]!.userId, 'ghost0', users[1]!.userId, 'ghost1', users[2]!.userId];
    for (const name of names) expectForbidden(await login(hs.url, name, 'wrong'));
    expect(passwordHashCount() - hashesBefore).toBe(5);

    for (let i = 0; i < 20; i++) expectLimited(await login(hs.url, i % 2 ? `ghost${i + 10}` : users[i % 3]!.userId, 'wrong'));
    // The right password from this address waits as well (the address has no token).
    const locked = await login(hs.url, users[0]!.userId, 'pw0');
    expectLimited(locked);
    expect(passwordHashCount() - hashesBefore).toBe(5);

    // Another address is not affected.
    const elsewhere = new Agent({ localAddress: '127.0.0.3' });
    try {
      expectForbidden(await loginFrom(elsewhere, hs.url, 'ghost99', 'wrong'));
      expect((await loginFrom(elsewhere, hs.url, users[1]!.userId, 'pw1')).status).toBe(200);
    } finally {
      await elsewhere.close();
    }

    await sleep(locked.body.retry_after_ms);
    expect((await login(hs.url, users[0]!.userId, 'pw0')).status).toBe(200);
  });
});

describe('a flood of concurrent logins', () => {
  let hs: Hs;
  let alice: TestUser;
  beforeAll(async () => {
    // A burst high enough that the hashing pool (one hash at a time, 64 waiting), not the
    // failure limit, is what pushes back.
    hs = await startTestPeekd({ env: { PEEKD_LOGIN_FAILURE_BURST: '100000', PEEKD_PASSWORD_HASH_CONCURRENCY: '1' } });
    alice = await TestUser.register(hs.url, 'alice', 'alice pw');
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('200 at once: no 5xx, the overflow answers 429 with retry_after_ms, memory stays bounded, the server still serves', async () => {
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    let answers: MatrixResponse[];
    try {
      answers = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const [user, password] = i % 3 === 0 ? [alice.userId, 'alice pw'] : i % 3 === 1 ? [alice.userId, `wrong${i}`] : [`nobody${i}`, 'wrong'];
          return login(hs.url, user, password);
        }),
      );
    } finally {
      clearInterval(sampler);
    }
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => ![200, 403, 429].includes(s))).toEqual([]);
    const limited = answers.filter((a) => a.status === 429);
    // One hashing and 64 waiting at most, so most of the 200 cannot be taken in (a few
    // more are, as hashes finish while the flood still arrives).
    expect(limited.length).toBeGreaterThanOrEqual(50);
    for (const a of limited) {
      expect(a.body.errcode).toBe('M_LIMIT_EXCEEDED');
      expect(a.body.retry_after_ms).toBeGreaterThan(0);
    }
    expect(statuses).toContain(200);
    expect(statuses).toContain(403);
    expect(rssPeak - rssBefore).toBeLessThan(200 * 1024 * 1024);

    expect((await login(hs.url, alice.userId, 'alice pw')).status).toBe(200);
  });
});

describe('the password hashing pool', () => {
  it('runs at most `concurrency` hashes at once, queues a bounded number, refuses the rest', async () => {
    const hasher = new PasswordHasher({ concurrency: 2, maxQueued: 4 });
    const stored = await hasher.hash('pw');
    let peakRunning = 0;
    const sampler = setInterval(() => (peakRunning = Math.max(peakRunning, hasher.load.running)), 1);
    try {
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => hasher.verify(i === 0 ? 'pw' : 'no', stored)));
      const busy = results.filter((r) => r.status === 'rejected');
      expect(busy).toHaveLength(4);
      for (const r of busy) {
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(PasswordHasherBusyError);
        expect((r as PromiseRejectedResult).reason.retryAfterMs).toBeGreaterThan(0);
      }
      expect(results.map((r) => (r.status === 'fulfilled' ? r.value : 'busy'))).toEqual([true, false, false, false, false, false, 'busy', 'busy', 'busy', 'busy']);
    } finally {
      clearInterval(sampler);
    }
    expect(peakRunning).toBeLessThanOrEqual(2);
    expect(hasher.load).toEqual({ running: 0, queued: 0 });
  });
});

describe('registration closed', () => {
  let hs: Hs;
  beforeAll(async () => {
    hs = await startTestPeekd({ env: { PEEKD_REGISTRATION: 'closed' } });
  });
  afterAll(async () => {
    await hs?.dropAll();
  });

  it('/register answers 403 M_FORBIDDEN (flows, completion, availability); existing accounts still log in', async () => {
    // An account made by the operator, not through /register.
    const userId = await hs.peekd.client.accounts.register('existing', 'existing pw', new PasswordHasher({ concurrency: 1 }));

    const flows = await request(hs.url, 'POST', v3('/register'), { body: {} });
    expectForbidden(flows);
    const complete = await request(hs.url, 'POST', v3('/register'), { body: { username: 'newcomer', password: 'pw', auth: { type: 'm.login.dummy' } } });
    expectForbidden(complete, 'pw');
    const r0 = await request(hs.url, 'POST', '/_matrix/client/r0/register?kind=user', { body: { username: 'newcomer', password: 'pw', auth: { type: 'm.login.dummy' } } });
    expectForbidden(r0);
    expectForbidden(await request(hs.url, 'GET', v3('/register/available?username=newcomer')));
    // Guests too: closed is closed.
    expectForbidden(await request(hs.url, 'POST', v3('/register?kind=guest'), { body: {} }));

    const ok = await login(hs.url, 'existing', 'existing pw');
    expect(ok.status).toBe(200);
    expect(ok.body.user_id).toBe(userId);
    const who = await request(hs.url, 'GET', v3('/account/whoami'), { token: ok.body.access_token });
    expect(who.body.user_id).toBe(userId);
    expectForbidden(await login(hs.url, 'newcomer', 'pw'));
  });
});
