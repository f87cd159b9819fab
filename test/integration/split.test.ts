// Every role in its own process (here: its own peekd instance and NATS connection):
// server B runs HTTP, rooms, two projections processes and federation apart, and a device
// on B peeks a room hosted on server A. /peek starts the federated peek from the HTTP
// process, A's /send reaches B's HTTP process, device syncs reach the federation upkeep
// over NATS, and each projection and federation job runs in exactly one process, moving
// when its process goes away.
import { Kvm } from '@nats-io/kv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { PROJECTIONS } from '../../src/projections/index.ts';
import { connectNats } from '../../src/nats/connection.ts';
import { deleteStreams } from '../../src/nats/streams.ts';
import { startPeekd, type Peekd } from '../../src/server.ts';
import { freePort } from '../helpers/natsCluster.ts';
import { TestUser, enc } from '../helpers/matrix.ts';
import { createTestDatabase, natsUrl, tempDir, uniqueName, type TestDatabase } from '../helpers/services.ts';
import { splitDeployment, type SplitDeployment } from '../helpers/splitDeployment.ts';
import { waitFor } from '../helpers/federation.ts';

const LEASE_TTL_MS = 1_500;
const IDLE_MS = 3_000;

describe('a split deployment peeks a room on another server', () => {
  const nameA = `${uniqueName('spa')}.test`;
  const nameB = `${uniqueName('spb')}.test`;
  const prefixA = `${uniqueName()}_`;
  const dirA = tempDir('peekd-split-a-');
  let dbA: TestDatabase;
  let B: SplitDeployment;
  let portA: number;
  let portB: number;
  let A: Peekd;
  let http: Peekd;
  let projections: Peekd[];
  let federation: Peekd;

  const env = () => ({
    NATS_URL: natsUrl(),
    PEEKD_SHARDS: '8',
    PEEKD_LOG_LEVEL: process.env.PEEKD_TEST_LOG_LEVEL ?? 'silent',
    PEEKD_REGISTRATION_RATE_PER_SECOND: '1000',
    PEEKD_LEASE_TTL_MS: String(LEASE_TTL_MS),
    PEEKD_OUTBOUND_IDLE_MS: String(IDLE_MS),
    PEEKD_INBOUND_RENEWAL_INTERVAL_MS: '60000',
    PEEKD_FEDERATION_DESTINATIONS: JSON.stringify({ [nameA]: `http://127.0.0.1:${portA}`, [nameB]: `http://127.0.0.1:${portB}` }),
  });
  const startB = (roles: string) => B.start(roles, roles === 'http' ? { PEEKD_LISTEN: `127.0.0.1:${portB}` } : {});

  /** Which process (by index in `candidates`) holds each job lease of B. */
  const jobHolders = async (jobs: string[]) => {
    const nc = await connectNats(natsUrl());
    try {
      const kv = await new Kvm(nc).open(http.naming.kvBucket('leases'));
      const out: Record<string, string | undefined> = {};
      for (const job of jobs) {
        const e = await kv.get(`job.${job}`);
        out[job] = e && e.operation === 'PUT' ? e.string() : undefined;
      }
      return out;
    } finally {
      await nc.close();
    }
  };

  beforeAll(async () => {
    [portA, portB] = [await freePort(), await freePort()];
    dbA = await createTestDatabase();
    B = await splitDeployment({ shards: 8, serverName: nameB, label: 'split-b', env: env() });
    A = await startPeekd(
      loadConfig(
        { ...env(), PEEKD_SERVER_NAME: nameA, PEEKD_LISTEN: `127.0.0.1:${portA}`, PEEKD_DATA_DIR: dirA.path, PEEKD_STREAM_PREFIX: prefixA, ...(dbA.url ? { DATABASE_URL: dbA.url } : {}) },
        undefined,
      ),
    );
    await startB('rooms');
    projections = [await startB('projections'), await startB('projections')];
    federation = await startB('federation');
    http = await startB('http');
  }, 90_000);

  afterAll(async () => {
    await B?.close();
    await A?.close();
    const nc = await connectNats(natsUrl());
    if (A) await deleteStreams(nc, A.naming).catch(() => undefined);
    await nc.close();
    await dbA?.drop();
    dirA.remove();
  });

  it('starts the federated peek from the HTTP process, delivers the host’s events, keeps it alive on device syncs, and moves jobs when a process goes', async () => {
    expect(http.host).toBeUndefined();
    expect(http.projections.size).toBe(0);
    // Every projection runs in exactly one of the two projections processes, and both
    // federation jobs in the federation process.
    const names = PROJECTIONS.map((p) => p.name);
    const held = await waitFor('every projection job held', async () => {
      const h = await jobHolders(names);
      return names.every((n) => h[n] !== undefined) ? h : undefined;
    });
    const projectionHosts = new Set(projections.map((p) => p.hostId));
    for (const n of names) expect(projectionHosts.has(held[n]!), n).toBe(true);
    const fedJobs = await waitFor('both federation jobs held', async () => {
      const h = await jobHolders(['federation_sender', 'outbound_upkeep']);
      return h.federation_sender && h.outbound_upkeep ? h : undefined;
    });
    expect(fedJobs.federation_sender).toBe(federation.hostId);
    expect(fedJobs.outbound_upkeep).toBe(federation.hostId);

    // A hosts a world_readable room; bob on B peeks it through B's HTTP process.
    const alice = await TestUser.register(A.url!, 'alice');
    const roomId = (await alice.createWorldReadableRoom()).room_id as string;
    await alice.send(roomId, 'before the peek');
    const bob = await TestUser.register(http.url!, 'bob');
    const peek = await bob.peek(roomId);
    expect(peek.status).toBe(200);
    const first = await bob.syncUntil(undefined, (b) => b.rooms?.peek?.[roomId] !== undefined);
    expect(first.body.rooms.peek[roomId].timeline.events.map((e: any) => e.content.body)).toContain('before the peek');

    // A's next message reaches bob's long-poll on B's HTTP process (A → B /send → rooms → projections → wake).
    let since = first.body.next_batch as string;
    const poll = bob.sync({ since, timeout: 10_000 });
    const eventId = await alice.send(roomId, 'live from A');
    const woken = await poll;
    expect(woken.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toContain(eventId);
    since = woken.next_batch;

    // Bob keeps syncing on the HTTP process for twice the idle window: the upkeep in the
    // federation process hears of it over NATS and keeps the federated peek (A keeps it live).
    const until = Date.now() + 2 * IDLE_MS;
    while (Date.now() < until) since = (await bob.sync({ since, timeout: 250 })).next_batch;
    const inbound = await A.database.db.execute(`select count(*)::int as n from federationsender_inbound_peeks where room_id = '${roomId.replace(/'/g, "''")}'` as never);
    expect(Number((inbound as any).rows?.[0]?.n ?? (inbound as any)[0]?.n)).toBe(1);

    // The projections process that runs sync_rooms goes away: the other takes it over, and
    // A's next message still reaches bob.
    const syncRoomsHolder = held.sync_rooms!;
    await B.stop(projections.find((p) => p.hostId === syncRoomsHolder)!);
    await waitFor(
      'sync_rooms to move',
      async () => {
        const h = await jobHolders(['sync_rooms']);
        return h.sync_rooms !== undefined && h.sync_rooms !== syncRoomsHolder;
      },
      15_000,
    );
    const poll2 = bob.sync({ since, timeout: 10_000 });
    const eventId2 = await alice.send(roomId, 'after the move');
    const woken2 = await poll2;
    expect(woken2.rooms.peek[roomId]?.timeline.events.map((e: any) => e.event_id)).toContain(eventId2);
    expect((await bob.req('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=10`)).status).toBe(200);
  }, 90_000);
});
