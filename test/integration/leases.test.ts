// Job and shard leases on a real NATS: exactly one holder, handover on a clean stop, and a
// holder cut off from NATS lets go before its successor takes over (no two senders).
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobLeases } from '../../src/cluster/shardLeases.ts';
import { Naming } from '../../src/events/subjects.ts';
import { connectNats } from '../../src/nats/connection.ts';
import { deleteStreams } from '../../src/nats/streams.ts';
import type { NatsConnection } from '@nats-io/transport-node';
import { waitFor } from '../helpers/federation.ts';
import { natsUrl, uniqueName } from '../helpers/services.ts';

const TTL_MS = 2_000;

/** A TCP proxy to NATS that can be cut: every connection through it dies, and new ones are refused. */
async function cuttableProxy(target: URL): Promise<{ url: string; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let open = true;
  const server: Server = createServer((client) => {
    if (!open) return client.destroy();
    const upstream = tcpConnect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `nats://127.0.0.1:${port}`,
    cut: () => {
      open = false;
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('job leases', () => {
  const naming = new Naming(`${uniqueName()}_`, 4);
  const conns: NatsConnection[] = [];
  let admin: NatsConnection;

  beforeAll(async () => {
    admin = await connectNats(natsUrl());
  });
  afterAll(async () => {
    for (const c of conns) await c.close().catch(() => undefined);
    await deleteStreams(admin, naming);
    await admin.close();
  });

  /** A lease holder whose running jobs are recorded with the times they started and stopped. */
  const holder = (nc: NatsConnection, id: string) => {
    const running = new Set<string>();
    const log: { job: string; what: 'start' | 'stop'; at: number }[] = [];
    const leases = new JobLeases(
      nc,
      naming,
      id,
      'test',
      ['sender', 'upkeep'],
      {
        acquired: (job) => {
          running.add(job);
          log.push({ job, what: 'start', at: Date.now() });
        },
        released: (job) => {
          running.delete(job);
          log.push({ job, what: 'stop', at: Date.now() });
        },
      },
      { ttlMs: TTL_MS },
    );
    return { leases, running, log };
  };

  it('runs each job in one holder, hands it over on stop, and lets go when cut off before the successor starts', async () => {
    const proxy = await cuttableProxy(new URL(natsUrl().split(',')[0]!));
    try {
      const ncA = await connectNats(proxy.url, 'lease-a');
      const ncB = await connectNats(natsUrl(), 'lease-b');
      conns.push(ncA, ncB);
      const a = holder(ncA, 'A');
      await a.leases.start();
      expect([...a.running].sort()).toEqual(['sender', 'upkeep']);
      const b = holder(ncB, 'B');
      await b.leases.start();
      // Two holders share the two jobs: one each, never both on one job.
      await waitFor('one job each', () => a.running.size === 1 && b.running.size === 1, 10_000);
      expect([...a.running, ...b.running].sort()).toEqual(['sender', 'upkeep']);

      // A is cut off from NATS: it stops its job before B starts it.
      const aJob = [...a.running][0]!;
      proxy.cut();
      await waitFor('B to run both jobs', () => b.running.size === 2, 4 * TTL_MS);
      const aStopped = a.log.find((e) => e.job === aJob && e.what === 'stop');
      const bStarted = b.log.filter((e) => e.job === aJob && e.what === 'start').at(-1);
      expect(aStopped, 'A let go of its job').toBeDefined();
      expect(aStopped!.at).toBeLessThanOrEqual(bStarted!.at);
      await a.leases.stop();

      // A clean stop hands over at once (a watch sees the deleted lease), long before the TTL.
      const c = holder(await connectNats(natsUrl(), 'lease-c').then((nc) => (conns.push(nc), nc)), 'C');
      await c.leases.start();
      await waitFor('one job each for B and C', () => b.running.size === 1 && c.running.size === 1, 10_000);
      const stoppedAt = Date.now();
      await b.leases.stop();
      await waitFor('C to run both jobs', () => c.running.size === 2, TTL_MS);
      expect(Date.now() - stoppedAt).toBeLessThan(TTL_MS);
      await c.leases.stop();
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
