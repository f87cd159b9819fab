// The admin API behind the operator's page: live peeks of every kind (two real servers
// peeking each other over federation, users peeking through the client API), the shard map
// all in one process and with roles split (leases read from NATS KV), each projection
// against its stream head in log messages (the metrics' unit), the guard (401 without the
// token, 404 when the admin API is off), and the page's static files with their security
// headers.
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECTIONS } from '../../src/projections/index.ts';
import type { Peekd } from '../../src/peekd.ts';
import { inboundPeeks, outboundPeeks, startFederation, type Federation, type FedServer } from '../helpers/federation.ts';
import { TestUser, auditUntil, request } from '../helpers/matrix.ts';
import { splitDeployment, type SplitDeployment } from '../helpers/splitDeployment.ts';
import { until } from '../helpers/until.ts';

const TOKEN = 'admin-view-test-token';
const NEW_ENDPOINTS = ['/_peekd/admin/v1/peeks', '/_peekd/admin/v1/shards', '/_peekd/admin/v1/projections'];

/** GET an admin path with the token (unless other headers are given). */
const get = (baseUrl: string, path: string, params: Record<string, string> = {}, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) => {
  const qs = new URLSearchParams(params).toString();
  return request(baseUrl, 'GET', qs ? `${path}?${qs}` : path, { headers });
};

async function ok(baseUrl: string, path: string, params: Record<string, string> = {}) {
  const r = await get(baseUrl, path, params);
  if (r.status !== 200) throw new Error(`GET ${path} ${JSON.stringify(params)}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The last sequence of one of a server's streams, from JetStream. */
async function lastSeq(server: FedServer, kind: 'peeks' | 'rooms'): Promise<number> {
  const jsm = await jetstreamManager(server.peekd.nc);
  return (await jsm.streams.info(server.peekd.naming.streamName(kind))).state.last_seq;
}

async function metricsText(baseUrl: string): Promise<string> {
  const r = await fetch(`${baseUrl}/metrics`);
  expect(r.status).toBe(200);
  return r.text();
}

/** The value of one sample of the Prometheus text format (NaN when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return NaN;
}

/** The endpoint and the metrics count in the same unit, log messages: the same numbers. */
function expectMetricsToMatch(text: string, projections: { name: string; stream: string; position: number; head: number; lag: number }[]): void {
  for (const p of projections) {
    expect([p.name, sample(text, 'peekd_projection_position', { projection: p.name })]).toEqual([p.name, p.position]);
    expect([p.name, sample(text, 'peekd_projection_lag', { projection: p.name })]).toEqual([p.name, p.lag]);
    expect([p.name, sample(text, 'peekd_stream_head', { stream: p.stream })]).toEqual([p.name, p.head]);
  }
}

describe('admin view API, all roles in one process', () => {
  let fed: Federation;
  let A: FedServer;
  let B: FedServer;
  let alice: TestUser;
  let carol: TestUser;
  let bob: TestUser;
  let room: string;
  let quiet: string;
  let peekId: string;

  beforeAll(async () => {
    fed = await startFederation({ servers: 2, env: { PEEKD_ADMIN_TOKEN: TOKEN } });
    [A, B] = fed.servers as [FedServer, FedServer];
    alice = await TestUser.register(A.url, 'alice');
    carol = await TestUser.register(A.url, 'carol');
    bob = await TestUser.register(B.url, 'bob');
    room = (await alice.createWorldReadableRoom()).room_id;
    quiet = (await alice.createWorldReadableRoom()).room_id;
    // carol peeks on A (a device peek); bob on B peeks A's room (a device peek at B, B's
    // outbound peek of A, and A's inbound peek from B).
    expect((await carol.peek(room)).status).toBe(200);
    expect((await bob.peek(room)).status).toBe(200);
    peekId = (await outboundPeeks(B, room))[0]!.peekId;
    await until('A to record the inbound peek', async () => (await inboundPeeks(A, room)).length === 1);
  });

  afterAll(async () => {
    await fed?.cleanup();
  });

  it('lists the live peeks of every kind, with their fields, on both servers', async () => {
    const [carolRow] = (await A.peekd.database.db.query.syncapiPeeks.findMany()).filter((r) => r.userId === carol.userId);
    const [inRow] = await inboundPeeks(A, room);
    const atA = await ok(A.url, '/_peekd/admin/v1/peeks');
    expect(atA.counts).toEqual({ device: 1, inbound: 1, outbound: 0 });
    expect(atA.peeks).toHaveLength(2);
    expect(atA.peeks).toEqual(
      expect.arrayContaining([
        {
          kind: 'device',
          room_id: room,
          user_id: carol.userId,
          device_id: carol.deviceId,
          started_at: carolRow!.startedAt,
          renewed_at: carolRow!.renewedAt,
          expires_at: carolRow!.expiresAt,
          started_seq: carolRow!.startedSeq,
        },
        {
          kind: 'inbound',
          room_id: room,
          server_name: B.name,
          peek_id: peekId,
          started_at: inRow!.createdAt,
          renewed_at: inRow!.renewedAt,
          expires_at: inRow!.expiresAt,
          renewal_interval_ms: inRow!.renewalIntervalMs,
          started_seq: inRow!.startedSeq,
        },
      ]),
    );
    // Newest first.
    expect(atA.peeks.map((p: any) => p.started_at)).toEqual([...atA.peeks.map((p: any) => p.started_at)].sort((x: number, y: number) => y - x));

    const atB = await ok(B.url, '/_peekd/admin/v1/peeks');
    expect(atB.counts).toEqual({ device: 1, inbound: 0, outbound: 1 });
    const outbound = atB.peeks.find((p: any) => p.kind === 'outbound');
    expect(outbound).toEqual({
      kind: 'outbound',
      room_id: room,
      server_name: A.name,
      peek_id: peekId,
      started_at: expect.any(Number),
      renewed_at: expect.any(Number),
      expires_at: expect.any(Number),
      renewal_interval_ms: expect.any(Number),
      started_seq: expect.any(Number),
    });
    expect(atB.peeks.find((p: any) => p.kind === 'device')).toMatchObject({ room_id: room, user_id: bob.userId, device_id: bob.deviceId });
    // A live peek's started_seq is its PeekStarted row in the audit (how the page pairs them).
    const audit = await auditUntil(A.url, TOKEN, { room_id: room }, (es) => es.some((e) => e.user_id === carol.userId));
    expect(audit.find((e) => e.user_id === carol.userId && e.event === 'PeekStarted')?.seq).toBe(carolRow!.startedSeq);
  });

  it('filters by room, user, server and kind; counts are the totals for the filter, not the page', async () => {
    const others: TestUser[] = [];
    for (let i = 0; i < 3; i++) others.push(await TestUser.register(A.url, `viewer${i}`));
    for (const u of others) expect((await u.peek(room)).status).toBe(200);
    expect((await others[0]!.peek(quiet)).status).toBe(200);
    // An ended peek is not live.
    const gone = await TestUser.register(A.url, 'gone');
    expect((await gone.peek(room)).status).toBe(200);
    expect((await gone.unpeek(room)).status).toBe(200);

    const inRoom = await ok(A.url, '/_peekd/admin/v1/peeks', { room_id: room });
    expect(inRoom.counts).toEqual({ device: 4, inbound: 1, outbound: 0 });
    expect(inRoom.peeks.every((p: any) => p.room_id === room)).toBe(true);
    expect(
      inRoom.peeks
        .map((p: any) => p.user_id)
        .filter(Boolean)
        .sort(),
    ).toEqual([carol, ...others].map((u) => u.userId).sort());

    // A page of two: the two newest, and the counts of everything that matched.
    const page = await ok(A.url, '/_peekd/admin/v1/peeks', { room_id: room, limit: '2' });
    expect(page.peeks).toHaveLength(2);
    expect(page.counts).toEqual(inRoom.counts);
    expect(page.peeks).toEqual(inRoom.peeks.slice(0, 2));
    expect(page.peeks.map((p: any) => p.user_id)).toEqual([others[2]!.userId, others[1]!.userId]);

    const ofUser = await ok(A.url, '/_peekd/admin/v1/peeks', { user_id: others[0]!.userId });
    expect(ofUser.counts).toEqual({ device: 2, inbound: 0, outbound: 0 });
    expect(ofUser.peeks.map((p: any) => p.room_id).sort()).toEqual([room, quiet].sort());
    expect(await ok(A.url, '/_peekd/admin/v1/peeks', { user_id: gone.userId })).toEqual({ peeks: [], counts: { device: 0, inbound: 0, outbound: 0 } });

    const ofServer = await ok(A.url, '/_peekd/admin/v1/peeks', { server_name: B.name });
    expect(ofServer.counts).toEqual({ device: 0, inbound: 1, outbound: 0 });
    expect(ofServer.peeks).toMatchObject([{ kind: 'inbound', server_name: B.name, peek_id: peekId }]);

    const inbound = await ok(A.url, '/_peekd/admin/v1/peeks', { kind: 'inbound' });
    expect(inbound.counts).toEqual({ device: 0, inbound: 1, outbound: 0 });
    expect(inbound.peeks.map((p: any) => p.kind)).toEqual(['inbound']);
    const devices = await ok(A.url, '/_peekd/admin/v1/peeks', { kind: 'device', room_id: quiet });
    expect(devices).toMatchObject({ counts: { device: 1, inbound: 0, outbound: 0 }, peeks: [{ user_id: others[0]!.userId, room_id: quiet }] });
    // Filters combine: a device peek has no server, so nothing is both.
    expect((await ok(A.url, '/_peekd/admin/v1/peeks', { user_id: carol.userId, server_name: B.name })).counts).toEqual({ device: 0, inbound: 0, outbound: 0 });
    expect(await ok(A.url, '/_peekd/admin/v1/peeks', { room_id: `!nobody:${A.name}` })).toEqual({ peeks: [], counts: { device: 0, inbound: 0, outbound: 0 } });
    // A limit above the maximum is brought down to it, not refused.
    expect((await ok(A.url, '/_peekd/admin/v1/peeks', { limit: '5000' })).peeks).toHaveLength(6);
  });

  it('refuses malformed filters with 400 M_INVALID_PARAM', async () => {
    const bad: Record<string, string>[] = [
      { room_id: 'not-a-room' },
      { room_id: `#alias:${A.name}` },
      { user_id: 'carol' },
      { user_id: '@no-server' },
      { server_name: 'bad server' },
      { server_name: 'example.org:99999' },
      { kind: 'remote' },
      { limit: '0' },
      { limit: '-1' },
      { limit: '1.5' },
      { limit: 'ten' },
      { limit: '' },
    ];
    for (const params of bad) {
      const r = await get(A.url, '/_peekd/admin/v1/peeks', params);
      expect({ params, status: r.status, errcode: r.body?.errcode }).toEqual({ params, status: 400, errcode: 'M_INVALID_PARAM' });
      expect(typeof r.body.error).toBe('string');
    }
    // A parameter given twice is refused too, not read as a list.
    const twice = await request(A.url, 'GET', `/_peekd/admin/v1/peeks?room_id=${encodeURIComponent(room)}&room_id=${encodeURIComponent(quiet)}`, { token: TOKEN });
    expect([twice.status, twice.body.errcode]).toEqual([400, 'M_INVALID_PARAM']);
  });

  it('maps every shard to this process, without leases, all in one process', async () => {
    const map = await ok(A.url, '/_peekd/admin/v1/shards');
    expect(map.mode).toBe('all-in-one');
    expect(map.this_host).toBe(A.peekd.hostId);
    expect(map.shards).toEqual(Array.from({ length: A.peekd.naming.shards }, (_, shard) => ({ shard, owner: A.peekd.hostId, lease_age_ms: null })));
    expect(map.shards).toHaveLength(8);
    expect(map.lease_ttl_ms).toBeNull();
    expect(map.jobs.map((j: any) => j.job)).toEqual([...PROJECTIONS.map((p) => p.name), 'federation_sender', 'outbound_upkeep']);
    expect(map.jobs.every((j: any) => j.owner === A.peekd.hostId && j.lease_age_ms === null)).toBe(true);
    // Each server answers for itself.
    expect((await ok(B.url, '/_peekd/admin/v1/shards')).this_host).toBe(B.peekd.hostId);
  });

  it('gives each projection its position, head and lag in log messages, as the metrics do, and the lag of one that stopped', async () => {
    const positions = async () => (await ok(A.url, '/_peekd/admin/v1/projections')).projections as any[];
    const byName = async () => new Map((await positions()).map((p) => [p.name, p]));
    const first = await positions();
    expect(first.map((p) => [p.name, p.stream])).toEqual(PROJECTIONS.map((p) => [p.name, p.stream]));
    for (const p of first) {
      expect(Object.keys(p).sort()).toEqual(['head', 'lag', 'name', 'position', 'stream']);
      for (const n of [p.position, p.head, p.lag]) expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
      expect(p.lag).toBe(Math.max(0, p.head - p.position));
    }
    // Settled, every projection has committed the last message of its stream.
    await until('every projection at its head', async () => (await positions()).every((p) => p.lag === 0 && p.position === p.head));
    const settled = await byName();
    // `head` is the stream's last sequence, in messages (not a position × 1000).
    const peeksHead = await lastSeq(A, 'peeks');
    const roomsHead = await lastSeq(A, 'rooms');
    expect(peeksHead).toBeGreaterThan(0);
    expect(roomsHead).toBeGreaterThan(0);
    for (const p of settled.values()) expect([p.name, p.head]).toEqual([p.name, p.stream === 'peeks' ? peeksHead : roomsHead]);
    // The same numbers as the metrics.
    expectMetricsToMatch(await metricsText(A.url), [...settled.values()]);

    // The audit projection stops, then N peek commands append N messages to PEEKS: the
    // audit stays where it was, exactly N messages behind; sync_peeks is at the new head.
    const before = settled.get('audit')!;
    const runner = A.peekd.projections.get('audit')!;
    await runner.stop();
    const N = 3;
    try {
      const late = await TestUser.register(A.url, 'late');
      expect((await late.peek(quiet)).status).toBe(200); // PeekStarted
      expect((await late.peek(quiet)).status).toBe(200); // PeekRenewed
      expect((await late.unpeek(quiet)).status).toBe(200); // the peek ends
      await until('every other projection at the new head', async () =>
        (await positions()).every((p) => p.name === 'audit' || (p.lag === 0 && p.head === (p.stream === 'peeks' ? before.head + N : roomsHead))),
      );
      const now = await byName();
      expect(await lastSeq(A, 'peeks')).toBe(before.head + N);
      expect(now.get('audit')).toEqual({ name: 'audit', stream: 'peeks', position: before.position, head: before.head + N, lag: N });
      expect(now.get('sync_peeks')).toEqual({ name: 'sync_peeks', stream: 'peeks', position: before.head + N, head: before.head + N, lag: 0 });
      expect(now.get('sync_rooms')).toMatchObject({ head: roomsHead, lag: 0 });
      expectMetricsToMatch(await metricsText(A.url), [...now.values()]);
    } finally {
      await runner.start();
    }
    await until('the audit to catch up', async () => {
      const audit = (await byName()).get('audit')!;
      return audit.lag === 0 && audit.position === before.head + N;
    });
  });

  it('answers 401 without the token, with a wrong one, or with one in the query string', async () => {
    for (const path of NEW_ENDPOINTS) {
      const none = await get(A.url, path, {}, {});
      expect([path, none.status, none.body.errcode]).toEqual([path, 401, 'M_MISSING_TOKEN']);
      const wrong = await get(A.url, path, {}, { authorization: 'Bearer not-the-token' });
      expect([path, wrong.status, wrong.body.errcode]).toEqual([path, 401, 'M_UNKNOWN_TOKEN']);
      const inQuery = await get(A.url, path, { access_token: TOKEN }, {});
      expect([path, inQuery.status, inQuery.body.errcode]).toEqual([path, 401, 'M_MISSING_TOKEN']);
    }
  });

  it('serves the page without a token, with a strict CSP and nosniff; /_peekd/admin redirects to it', async () => {
    const res = await fetch(`${A.url}/_peekd/admin/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const csp = res.headers.get('content-security-policy')!;
    const directives = new Map(
      csp
        .split(';')
        .map((d) => d.trim().split(/\s+/) as [string, ...string[]])
        .map(([name, ...values]) => [name, values]),
    );
    expect(directives.get('default-src')).toEqual(["'self'"]);
    expect(directives.get('script-src')).toEqual(["'self'"]);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    const html = await res.text();
    // Every script is a file from here; no inline script, no event handler attributes.
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.map((m) => [m[1]!.trim(), m[2]!.trim()])).toEqual([['type="module" src="admin.js"', '']]);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).not.toMatch(/\sstyle=/i);

    const etag = res.headers.get('etag')!;
    expect((await fetch(`${A.url}/_peekd/admin/`, { headers: { 'if-none-match': etag } })).status).toBe(304);

    for (const [file, type] of [
      ['admin.js', 'text/javascript; charset=utf-8'],
      ['admin.css', 'text/css; charset=utf-8'],
    ]) {
      const r = await fetch(`${A.url}/_peekd/admin/${file}`);
      expect([file, r.status, r.headers.get('content-type'), r.headers.get('x-content-type-options')]).toEqual([file, 200, type, 'nosniff']);
      expect((await r.text()).length).toBeGreaterThan(100);
    }
    // The script never puts data into the page as markup.
    const js = await (await fetch(`${A.url}/_peekd/admin/admin.js`)).text();
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);

    const bare = await fetch(`${A.url}/_peekd/admin`, { redirect: 'manual' });
    expect([bare.status, bare.headers.get('location')]).toEqual([302, '/_peekd/admin/']);
    const missing = await request(A.url, 'GET', '/_peekd/admin/nothing.js');
    expect([missing.status, missing.body.errcode]).toEqual([404, 'M_UNRECOGNIZED']);
  });
});

describe('admin view API, roles split', () => {
  let split: SplitDeployment;
  let http: Peekd;
  let off: Peekd;
  const TTL_MS = 3_000;

  beforeAll(async () => {
    split = await splitDeployment({ shards: 4, label: 'adminview', env: { PEEKD_LEASE_TTL_MS: String(TTL_MS) } });
    http = await split.start('http', { PEEKD_ADMIN_TOKEN: TOKEN });
    off = await split.start('http');
  }, 60_000);

  afterAll(async () => {
    await split?.close();
  });

  it('reads the shard map from the leases: no owner before a room host starts, then the hosts that hold them', async () => {
    const before = await ok(http.url!, '/_peekd/admin/v1/shards');
    expect(before).toMatchObject({ mode: 'split', this_host: http.hostId, lease_ttl_ms: TTL_MS });
    expect(before.shards).toEqual([0, 1, 2, 3].map((shard) => ({ shard, owner: null, lease_age_ms: null })));

    const hostA = await split.start('rooms,projections,federation');
    await until('host A to hold every shard', () => hostA.leases!.shards.length === 4);
    const one = await ok(http.url!, '/_peekd/admin/v1/shards');
    for (const s of one.shards) {
      expect(s.owner).toBe(hostA.hostId);
      expect(s.lease_age_ms).toBeGreaterThanOrEqual(0);
      expect(s.lease_age_ms).toBeLessThan(TTL_MS);
    }
    // Host A holds every job too (one projections process, one federation process).
    for (const j of one.jobs) expect([j.job, j.owner]).toEqual([j.job, hostA.hostId]);
    expect(one.hosts).toEqual(expect.arrayContaining([{ group: 'host', host: hostA.hostId, heartbeat_age_ms: expect.any(Number) }]));

    // A second room host takes its share; the map shows both, as the hosts themselves see it.
    const hostB = await split.start('rooms');
    await until('the shards to be shared', () => hostA.leases!.shards.length === 2 && hostB.leases!.shards.length === 2, 20_000);
    await until('the map to show both hosts', async () => {
      const map = await ok(http.url!, '/_peekd/admin/v1/shards');
      const owners = Object.fromEntries(map.shards.map((s: any) => [s.shard, s.owner]));
      return [...hostA.leases!.shards.map((s) => owners[s] === hostA.hostId), ...hostB.leases!.shards.map((s) => owners[s] === hostB.hostId)].every(Boolean);
    });
  });

  it('reads the positions of projections this process does not run from their checkpoints', async () => {
    expect(http.projections.size).toBe(0);
    const alice = await TestUser.register(http.url!, 'alice');
    const { room_id } = await alice.createWorldReadableRoom();
    const bob = await TestUser.register(http.url!, 'bob');
    expect((await bob.peek(room_id)).status).toBe(200);
    await until('the projections to reach the heads', async () => {
      const { projections } = await ok(http.url!, '/_peekd/admin/v1/projections');
      return projections.length === PROJECTIONS.length && projections.every((p: any) => p.head > 0 && p.position === p.head && p.lag === 0);
    });
    const peeks = await ok(http.url!, '/_peekd/admin/v1/peeks', { room_id });
    expect(peeks).toMatchObject({ counts: { device: 1, inbound: 0, outbound: 0 }, peeks: [{ kind: 'device', user_id: bob.userId, room_id }] });
  });

  it('answers 404 M_UNRECOGNIZED for the API and the page when PEEKD_ADMIN_TOKEN is unset', async () => {
    for (const path of [...NEW_ENDPOINTS, '/_peekd/admin/', '/_peekd/admin', '/_peekd/admin/admin.js', '/_peekd/admin/admin.css']) {
      for (const headers of [{}, { authorization: `Bearer ${TOKEN}` }] as Record<string, string>[]) {
        const r = await get(off.url!, path, {}, headers);
        expect([path, r.status, r.body?.errcode]).toEqual([path, 404, 'M_UNRECOGNIZED']);
      }
    }
  });
});
