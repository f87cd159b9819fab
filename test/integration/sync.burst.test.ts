// One event wakes more long-polls than one slice (src/syncapi/notifier.ts): a burst. While it
// lasts, a connection that has had its answer is not read from (holdConnection in
// src/syncapi/writeSlices.ts), so the device's next /sync waits in the socket until every
// answer is out. Over real keep-alive connections: the next request stays unread during the
// burst, is taken up once it ends, on the same connection, and is answered by the next event.
import { Agent, request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';
import { holding, MAX_HOLD_MS, wakingBegins, wakingEnds } from '../../src/syncapi/writeSlices.ts';

/** More than one wake slice (50). */
const DEVICES = 80;

let hs: Awaited<ReturnType<typeof startTestPeekd>>;

beforeAll(async () => {
  hs = await startTestPeekd();
});

afterAll(async () => {
  await hs?.dropAll();
});

interface Answer {
  body: { next_batch: string; rooms?: { peek?: Record<string, { timeline: { events: { content: { body?: string } }[] } }> } };
  /** The local port of the connection it came over (one per device). */
  port: number;
}

/** GET /sync over `agent` (one keep-alive connection per device). */
function sync(agent: Agent, token: string, since: string, timeoutMs: number): Promise<Answer> {
  const url = new URL(`${hs.url}/_matrix/client/v3/sync`);
  url.searchParams.set('since', since);
  url.searchParams.set('timeout', String(timeoutMs));
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const port = res.socket.localPort!;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`sync: ${res.statusCode} ${Buffer.concat(chunks).toString()}`));
        resolve({ body: JSON.parse(Buffer.concat(chunks).toString()) as Answer['body'], port });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const bodies = (a: Answer, room: string) => (a.body.rooms?.peek?.[room]?.timeline.events ?? []).map((e) => e.content.body);

describe('a burst of wake-ups', () => {
  it('leaves the next request of a device it answered unread until the burst is over, then takes it up on the same connection', async () => {
    const alice = await TestUser.register(hs.url, 'alice');
    const { room_id: room } = await alice.createWorldReadableRoom();
    const bob = await TestUser.register(hs.url, 'bob');
    expect((await bob.peek(room)).status).toBe(200);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const since = (await bob.sync()).next_batch as string;
    const before = hs.peekd.notifier.waiting;
    // A burst elsewhere in the process: another room's wake-up still waking its long-polls.
    wakingBegins();
    let bursting = true;
    try {
      const poll = sync(agent, bob.token, since, 30_000);
      await until('bob to long-poll', () => hs.peekd.notifier.waiting > before);
      await alice.send(room, 'one');
      const first = await poll;
      const answeredAt = performance.now();
      expect(bodies(first, room)).toEqual(['one']);
      // Bob asks again at once, on the same connection.
      const next = sync(agent, bob.token, first.body.next_batch, 30_000);
      let takenUpAt: number | undefined;
      const takenUp = until('bob to long-poll again', () => hs.peekd.notifier.waiting > before && (takenUpAt ??= performance.now()) > 0, 20_000, 2);
      await new Promise((r) => setTimeout(r, 150));
      // Not read at all: not even parsed and held as a request (admitSlot) — unless the
      // machine was so slow that MAX_HOLD_MS has passed already.
      if (performance.now() - answeredAt < MAX_HOLD_MS - 100) {
        expect(holding()).toEqual({ requests: 0, connections: 1 });
        expect(takenUpAt).toBeUndefined();
      }
      const endedAt = performance.now();
      wakingEnds();
      bursting = false;
      await takenUp;
      expect(takenUpAt!).toBeGreaterThanOrEqual(Math.min(endedAt, answeredAt + MAX_HOLD_MS - 5));
      expect(holding()).toEqual({ requests: 0, connections: 0 });
      await alice.send(room, 'two');
      const second = await next;
      expect(bodies(second, room)).toEqual(['two']);
      expect(second.port).toBe(first.port);
    } finally {
      if (bursting) wakingEnds();
      agent.destroy();
    }
  });

  it('answers every device, and takes up the next long-poll each sends on its connection as soon as it has its answer', async () => {
    const alice = await TestUser.register(hs.url, 'carol');
    const { room_id: room } = await alice.createWorldReadableRoom();
    const { accounts } = hs.peekd.client!;
    const devices = await Promise.all(
      Array.from({ length: DEVICES }, async (_, i) => {
        const userId = await accounts.register(`burst${i}`, undefined);
        const s = await accounts.createSession(userId, undefined);
        const user = new TestUser(hs.url, s.userId, s.deviceId, s.accessToken);
        expect((await user.peek(room)).status).toBe(200);
        return { user, agent: new Agent({ keepAlive: true, maxSockets: 1 }) };
      }),
    );
    try {
      const since = (await devices[0]!.user.sync()).next_batch as string;
      const waitingBefore = hs.peekd.notifier.waiting;
      const rounds = devices.map(async ({ user, agent }) => {
        const first = await sync(agent, user.token, since, 30_000);
        const second = await sync(agent, user.token, first.body.next_batch, 30_000);
        return { first, second };
      });
      await until('every device to long-poll', () => hs.peekd.notifier.waiting >= waitingBefore + DEVICES);
      await alice.send(room, 'one');
      await until('every device to long-poll again', () => hs.peekd.notifier.waiting >= waitingBefore + DEVICES, 20_000);
      await alice.send(room, 'two');
      const answers = await Promise.all(rounds);
      for (const { first, second } of answers) {
        expect(bodies(first, room)).toEqual(['one']);
        expect(bodies(second, room)).toEqual(['two']);
        expect(second.port).toBe(first.port);
      }
    } finally {
      for (const d of devices) d.agent.destroy();
    }
  });
});
