// Presence: PUT and GET /presence/{userId}/status, and m.presence in /sync — for the user
// and those sharing a room with them, incrementally, waking long-polls at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, request, TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';
import { twoHttpProcesses } from '../helpers/splitDeployment.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
let bob: TestUser;
let carol: TestUser;

beforeAll(async () => {
  hs = await startTestPeekd();
  [alice, bob, carol] = (await Promise.all(['alice', 'bob', 'carol'].map((n) => TestUser.register(hs.url, n)))) as [TestUser, TestUser, TestUser];
  const { room_id: room } = await alice.createRoom({ preset: 'public_chat' });
  expect((await bob.join(room)).status).toBe(200);
});

afterAll(async () => {
  await hs?.dropAll();
});

const status = (u: string) => `/_matrix/client/v3/presence/${enc(u)}/status`;
const presenceEvents = (body: any) => (body.presence?.events ?? []) as any[];
const presenceOf = (body: any, user: string) => presenceEvents(body).find((e) => e.sender === user);

describe('PUT and GET /presence/{userId}/status', () => {
  it('a user sets their presence and message; they and a room-mate read it back, with last_active_ago and currently_active', async () => {
    expect((await alice.req('PUT', status(alice.userId), { presence: 'online', status_msg: 'at my desk' })).status).toBe(200);
    const own = await alice.ok('GET', status(alice.userId));
    expect(own).toMatchObject({ presence: 'online', status_msg: 'at my desk', currently_active: true });
    expect(own.last_active_ago).toBeGreaterThanOrEqual(0);
    expect(own.last_active_ago).toBeLessThan(60_000);
    expect(await bob.ok('GET', status(alice.userId))).toMatchObject({ presence: 'online', status_msg: 'at my desk' });
    // Without a message the message goes.
    expect((await alice.req('PUT', status(alice.userId), { presence: 'unavailable' })).status).toBe(200);
    const away = await bob.ok('GET', status(alice.userId));
    expect(away).toMatchObject({ presence: 'unavailable', currently_active: false });
    expect(away.status_msg).toBeUndefined();
  });

  it("a user who never set presence is offline to a room-mate; others' presence cannot be set", async () => {
    expect(await alice.ok('GET', status(bob.userId))).toEqual({ presence: 'offline' });
    const r = await alice.req('PUT', status(bob.userId), { presence: 'online' });
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe('M_FORBIDDEN');
    expect(await alice.ok('GET', status(bob.userId))).toEqual({ presence: 'offline' });
  });

  it('403 for a user sharing no room with the caller, 404 for an unknown user, 400 for a malformed ID', async () => {
    const stranger = await carol.req('GET', status(alice.userId));
    expect(stranger.status).toBe(403);
    expect(stranger.body.errcode).toBe('M_FORBIDDEN');
    const unknown = await alice.req('GET', status(`@nobody:${hs.serverName}`));
    expect(unknown.status).toBe(404);
    expect(unknown.body.errcode).toBe('M_NOT_FOUND');
    const malformed = await alice.req('GET', status('not-a-user'));
    expect(malformed.status).toBe(400);
    expect(malformed.body.errcode).toBe('M_INVALID_PARAM');
  });

  it('bad bodies get the right error and change nothing', async () => {
    await alice.ok('PUT', status(alice.userId), { presence: 'online', status_msg: 'before' });
    const cases: [unknown, number, string][] = [
      [{ presence: 'busy' }, 400, 'M_INVALID_PARAM'],
      [{}, 400, 'M_BAD_JSON'],
      [{ presence: 5 }, 400, 'M_BAD_JSON'],
      [{ presence: 'online', status_msg: 7 }, 400, 'M_BAD_JSON'],
      [{ presence: 'online', status_msg: 'x'.repeat(2000) }, 400, 'M_INVALID_PARAM'],
      [['online'], 400, 'M_BAD_JSON'],
    ];
    for (const [body, code, errcode] of cases) {
      const r = await alice.req('PUT', status(alice.userId), body);
      expect([r.status, r.body.errcode], JSON.stringify(body)).toEqual([code, errcode]);
    }
    const notJson = await request(hs.url, 'PUT', status(alice.userId), { token: alice.token, rawBody: '{presence' });
    expect([notJson.status, notJson.body.errcode]).toEqual([400, 'M_NOT_JSON']);
    expect(await alice.ok('GET', status(alice.userId))).toMatchObject({ presence: 'online', status_msg: 'before' });
  });
});

describe('presence in /sync', () => {
  it('an initial sync carries the presence of room-mates and one’s own, never of strangers', async () => {
    await carol.ok('PUT', status(carol.userId), { presence: 'online', status_msg: 'carol here' });
    await alice.ok('PUT', status(alice.userId), { presence: 'online', status_msg: 'alice here' });
    const body = await bob.sync();
    expect(presenceOf(body, alice.userId)).toMatchObject({ type: 'm.presence', sender: alice.userId, content: { presence: 'online', status_msg: 'alice here', currently_active: true } });
    expect(typeof presenceOf(body, alice.userId).content.last_active_ago).toBe('number');
    expect(presenceOf(body, carol.userId)).toBeUndefined();
    // Carol sees her own.
    expect(presenceOf(await carol.sync(), carol.userId)?.content).toMatchObject({ presence: 'online', status_msg: 'carol here' });
  });

  it('a change wakes a room-mate’s long-poll at once, and an incremental sync carries only what changed since', async () => {
    const since = (await bob.sync()).next_batch as string;
    const poll = bob.sync({ since, timeout: 20_000 });
    await until('bob to long-poll', () => hs.peekd.notifier.waiting >= 1);
    const started = Date.now();
    await alice.ok('PUT', status(alice.userId), { presence: 'unavailable', status_msg: 'lunch' });
    const woken = await poll;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(presenceEvents(woken).map((e) => [e.sender, e.content.presence, e.content.status_msg])).toEqual([[alice.userId, 'unavailable', 'lunch']]);
    // Nothing changed since: an incremental sync has no presence.
    const again = await bob.sync({ since: woken.next_batch });
    expect(presenceEvents(again)).toEqual([]);
    // The same presence again is no change: nobody is told.
    await alice.ok('PUT', status(alice.userId), { presence: 'unavailable', status_msg: 'lunch' });
    expect(presenceEvents(await bob.sync({ since: woken.next_batch }))).toEqual([]);
  });

  it('a stranger’s change does not reach the user', async () => {
    const since = (await bob.sync()).next_batch as string;
    await carol.ok('PUT', status(carol.userId), { presence: 'unavailable' });
    await alice.ok('PUT', status(alice.userId), { presence: 'online' });
    const body = await bob.sync({ since });
    expect(presenceEvents(body).map((e) => e.sender)).toEqual([alice.userId]);
  });

  it('joining a room brings the presence of its members', async () => {
    const dave = await TestUser.register(hs.url, 'dave');
    const { room_id: room } = await carol.createRoom({ preset: 'public_chat' });
    const since = (await dave.sync()).next_batch as string;
    expect((await dave.join(room)).status).toBe(200);
    const { body } = await dave.syncUntil(since, (b) => room in (b.rooms?.join ?? {}));
    expect(presenceOf(body, carol.userId)?.content.presence).toBe('unavailable');
  });

  it('a sync token from before client data had its own position still works: the client data comes again as on an initial sync', async () => {
    const token = (await bob.sync()).next_batch as string;
    expect(token).toMatch(/^s\d+_\d+_\d+$/);
    const old = token.replace(/_\d+$/, '');
    const body = await bob.sync({ since: old });
    expect(presenceOf(body, alice.userId)?.content.presence).toBe('online');
    expect(body.next_batch).toMatch(/^s\d+_\d+_\d+$/);
  });

  it('a filter can leave presence out', async () => {
    for (const presence of [{ types: [] }, { not_types: ['*'] }, { not_types: ['m.pres*'] }, { senders: [] }]) {
      const body = await bob.sync({ filter: JSON.stringify({ presence }) });
      expect(presenceEvents(body), JSON.stringify(presence)).toEqual([]);
    }
    const limited = await bob.sync({ filter: JSON.stringify({ presence: { types: ['m.*'], limit: 1 } }) });
    expect(presenceEvents(limited)).toHaveLength(1);
  });
});

describe('roles split: the process that takes the change is not the one holding the long-poll', () => {
  it('a presence change and an account data change made through one HTTP process wake a long-poll held by another within seconds', async () => {
    const { split, two, alice: a, bobOnOne: b1, bobOnTwo: b, room: shared } = await twoHttpProcesses('presence', async (alice) => (await alice.createRoom({ preset: 'public_chat' })).room_id);
    try {
      const { body: joined } = await b.syncUntil(undefined, (x) => shared in (x.rooms?.join ?? {}));

      const poll = b.sync({ since: joined.next_batch, timeout: 20_000 });
      await until('bob to long-poll on the second process', () => two.notifier.waiting >= 1);
      const started = Date.now();
      await a.ok('PUT', status(a.userId), { presence: 'online', status_msg: 'from one' });
      const woken = await poll;
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(presenceOf(woken, a.userId)?.content).toMatchObject({ presence: 'online', status_msg: 'from one' });

      const poll2 = b.sync({ since: woken.next_batch, timeout: 20_000 });
      await until('bob to long-poll again', () => two.notifier.waiting >= 1);
      await b1.ok('PUT', `/_matrix/client/v3/user/${enc(b1.userId)}/account_data/org.example.split`, { via: 'one' });
      const woken2 = await poll2;
      expect(woken2.account_data.events).toEqual([{ type: 'org.example.split', content: { via: 'one' } }]);
    } finally {
      await split.close();
    }
  });
});
