// What an operator's probes and Prometheus see: /health, /ready (and why not), /metrics
// moving with real peeks, sends and long-polls, and /metrics on a listener of its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { enc, request, TestUser } from '../helpers/matrix.ts';
import { freePort } from '../helpers/natsCluster.ts';
import { until } from '../helpers/until.ts';

type Started = Awaited<ReturnType<typeof startTestPeekd>>;

/** The value of one sample of the Prometheus text format (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return 0;
}

async function metrics(url: string): Promise<string> {
  const r = await fetch(`${url}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
  return r.text();
}

describe('health, readiness and metrics', () => {
  let hs: Started;
  let alice: TestUser;
  let bob: TestUser;
  let roomId: string;

  beforeAll(async () => {
    hs = await startTestPeekd({ env: { PEEKD_READY_MAX_LAG: '0' } });
    alice = await TestUser.register(hs.url, 'alice');
    bob = await TestUser.register(hs.url, 'bob');
    roomId = (await alice.createWorldReadableRoom()).room_id;
    await caughtUp();
  });

  /** Every projection has committed the head of its stream (PEEKD_READY_MAX_LAG is 0 here). */
  const caughtUp = () => until('every projection to reach the head of its stream', async () => (await request(hs.url, 'GET', '/ready')).status === 200);
  afterAll(() => hs?.dropAll());

  it('answers /health and /ready with 200 while everything is in place', async () => {
    const health = await request(hs.url, 'GET', '/health');
    expect([health.status, health.body]).toEqual([200, { status: 'ok' }]);
    const ready = await request(hs.url, 'GET', '/ready');
    expect([ready.status, ready.body]).toEqual([200, { ready: true, reasons: [] }]);
  });

  it('counts commands by type and outcome, appends, live peeks, positions and requests', async () => {
    const before = await metrics(hs.url);
    expect((await bob.peek(roomId)).status).toBe(200);
    // A room that is not world_readable: the room refuses the peek.
    const privateRoom = (await alice.createRoom({ preset: 'private_chat' })).room_id;
    expect((await bob.peek(privateRoom)).status).toBe(403);
    await alice.send(roomId, 'hello');
    const after = await metrics(hs.url);

    const delta = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('peekd_commands_total', { type: 'StartDevicePeek', outcome: 'ok' })).toBe(1);
    expect(delta('peekd_commands_total', { type: 'StartDevicePeek', outcome: 'rejected' })).toBe(1);
    expect(delta('peekd_commands_total', { type: 'SendEvents', outcome: 'ok' })).toBe(1);
    expect(delta('peekd_command_duration_seconds_count', { type: 'SendEvents' })).toBe(1);
    expect(delta('peekd_append_duration_seconds_count', { stream: 'peeks' })).toBe(1);
    expect(delta('peekd_append_duration_seconds_count', { stream: 'rooms' })).toBeGreaterThanOrEqual(2); // createRoom + send
    // The gauge counts the sync side's table, which a 200 from /peek does not wait for (the
    // device's next /sync does): it shows the peek once the projection has committed it.
    await until('the peek to count in peekd_live_peeks', async () => sample(await metrics(hs.url), 'peekd_live_peeks', { kind: 'device' }) === 1);
    expect(sample(after, 'peekd_live_peeks', { kind: 'inbound' })).toBe(0);
    expect(sample(after, 'peekd_room_actors')).toBeGreaterThanOrEqual(2);
    // Every projection is at the head of its stream once the writes are visible.
    const head = sample(after, 'peekd_stream_head', { stream: 'rooms' });
    expect(head).toBeGreaterThan(0);
    await until('sync_rooms to reach the head', async () => sample(await metrics(hs.url), 'peekd_projection_position', { projection: 'sync_rooms' }) === head);
    expect(sample(await metrics(hs.url), 'peekd_projection_lag', { projection: 'sync_rooms' })).toBe(0);
    // Requests by route pattern, never by URL.
    expect(delta('peekd_http_requests_total', { method: 'POST', route: '/_matrix/client/v3/peek/:roomIdOrAlias', status: '200' })).toBe(1);
    expect(after).not.toContain(enc(roomId));
    // The process's own metrics come along.
    expect(after).toContain('process_cpu_seconds_total');
    expect(after).toContain('nodejs_eventloop_lag_p99_seconds');
    await caughtUp();
    expect(sample(await metrics(hs.url), 'peekd_ready')).toBe(1);
  });

  it('shows a waiting long-poll and how long its wake-up took', async () => {
    const first = await bob.sync({ timeout: 0 });
    const before = sample(await metrics(hs.url), 'peekd_sync_wakeup_seconds_count');
    const poll = bob.sync({ since: first.next_batch, timeout: 20_000 });
    await until('the long-poll to wait', async () => sample(await metrics(hs.url), 'peekd_sync_waiters') === 1);
    await alice.send(roomId, 'wake up');
    const woken = await poll;
    expect(JSON.stringify(woken.rooms ?? {})).toContain('wake up');
    const after = await metrics(hs.url);
    expect(sample(after, 'peekd_sync_waiters')).toBe(0);
    expect(sample(after, 'peekd_sync_wakeup_seconds_count') - before).toBe(1);
  });

  it('answers /ready 503 with the reason while a projection lags, and 200 again once it caught up', async () => {
    await caughtUp();
    const audit = hs.peekd.projections.get('audit')!;
    await audit.stop();
    try {
      expect((await bob.unpeek(roomId)).status).toBe(200);
      const r = await request(hs.url, 'GET', '/ready');
      expect(r.status).toBe(503);
      expect(r.body.ready).toBe(false);
      expect(r.body.reasons.join('\n')).toMatch(/projection audit is 1 messages behind/);
      expect(sample(await metrics(hs.url), 'peekd_ready')).toBe(0);
    } finally {
      await audit.start();
    }
    await until('/ready to answer 200 again', async () => (await request(hs.url, 'GET', '/ready')).status === 200);
  });

  it('answers /ready 503 from the moment shutdown begins, while /health still answers', async () => {
    const other = await startTestPeekd();
    try {
      other.peekd.health.drain();
      const r = await request(other.url, 'GET', '/ready');
      expect([r.status, r.body]).toEqual([503, { ready: false, reasons: ['shutting down'] }]);
      expect((await request(other.url, 'GET', '/health')).status).toBe(200);
    } finally {
      await other.dropAll();
    }
  });
});

describe('PEEKD_METRICS_LISTEN', () => {
  it('serves /metrics, /health and /ready on their own listener and not on the public one', async () => {
    const port = await freePort();
    const hs = await startTestPeekd({ env: { PEEKD_METRICS_LISTEN: `127.0.0.1:${port}` } });
    try {
      const ops = `http://127.0.0.1:${port}`;
      const text = await metrics(ops);
      expect(text).toContain('peekd_commands_total');
      expect((await request(ops, 'GET', '/ready')).status).toBe(200);
      const pub = await request(hs.url, 'GET', '/metrics');
      expect([pub.status, pub.body.errcode]).toEqual([404, 'M_UNRECOGNIZED']);
    } finally {
      await hs.dropAll();
    }
    // Shut down with the rest.
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
  });
});
