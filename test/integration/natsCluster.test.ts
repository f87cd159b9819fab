// The three-node JetStream cluster harness itself: it forms, places an R3 stream, survives
// a SIGKILLed stream leader (a new leader is elected, publishes go through once it is), takes
// the killed node back, keeps what was published before the kill, and leaves nothing behind.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { startNatsCluster, type NatsCluster } from '../helpers/natsCluster.ts';
import { uniqueName } from '../helpers/services.ts';

/** Polls `fn` until it returns a truthy value; fails with the last error after timeoutMs. */
async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last error: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('NATS cluster harness', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  beforeAll(async () => {
    cluster = await startNatsCluster();
    nc = await connect({ servers: cluster.urls, name: 'natsCluster.test', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    jsm = await jetstreamManager(nc, { timeout: 2000 });
    js = jetstream(nc, { timeout: 2000 });
  }, 40_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  it('forms a three-node cluster that every node serves', async () => {
    expect(cluster.nodes.map((n) => n.name)).toEqual(['n1', 'n2', 'n3']);
    expect(cluster.urls).toEqual(cluster.nodes.map((n) => n.clientUrl));
    expect(cluster.url).toBe(cluster.urls.join(','));
    expect(new Set(cluster.nodes.map((n) => n.port)).size).toBe(3);
    for (const n of cluster.nodes) {
      expect(n.running).toBe(true);
      expect(alive(n.pid)).toBe(true);
      expect(n.clientUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    }
    await cluster.waitHealthy();
    // Each node is the server its config names, and gossips the other nodes' client URLs: the routes are up.
    for (const n of cluster.nodes) {
      const single = await connect({ servers: n.clientUrl, reconnect: false });
      try {
        expect(single.info?.server_name).toBe(n.name);
        expect(single.info?.max_payload).toBe(8 * 1024 * 1024);
        const others = cluster.nodes.filter((o) => o !== n).map((o) => `127.0.0.1:${o.port}`);
        await until('the other nodes in connect_urls', async () => others.every((u) => single.info?.connect_urls?.includes(u)), 5_000);
      } finally {
        await single.close();
      }
    }
    expect(() => cluster.nodeByName('n9')).toThrow(/no node named n9/);
  });

  it('keeps an R3 stream writable and its data readable across a SIGKILLed leader and its restart', async () => {
    const stream = uniqueName('R3_');
    const subject = `${stream}.events`;
    const info = await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], num_replicas: 3, storage: StorageType.File, allow_direct: true });
    expect(info.config.num_replicas).toBe(3);
    await cluster.waitHealthy(stream);

    const before = await js.publish(subject, 'before the kill', { msgID: `${stream}-before` });
    expect(before.stream).toBe(stream);
    expect(before.seq).toBe(1);

    const oldLeader = await cluster.streamLeader(stream);
    expect(cluster.nodes.map((n) => n.name)).toContain(oldLeader);
    const victim = cluster.nodeByName(oldLeader);
    const victimPid = victim.pid;

    const killedAt = Date.now();
    await victim.kill();
    expect(victim.running).toBe(false);
    expect(alive(victimPid)).toBe(false);

    // A different leader within ~15 s (streamLeader polls while there is none).
    const newLeader = await until(
      'a new stream leader',
      async () => {
        const l = await cluster.streamLeader(stream, 2_000);
        return l !== oldLeader ? l : undefined;
      },
      15_000,
    );
    const electedMs = Date.now() - killedAt;
    expect(newLeader).not.toBe(oldLeader);
    expect(cluster.nodes.filter((n) => n.running).map((n) => n.name)).toContain(newLeader);

    // Publishing goes through the surviving nodes; the msgID makes retries idempotent.
    const after = await until<PubAck>('a publish after failover', () => js.publish(subject, 'after the failover', { msgID: `${stream}-after` }), 15_000);
    expect(after.seq).toBe(2);
    expect(after.duplicate).toBe(false);

    // The killed node comes back with its store and catches up.
    await victim.start();
    expect(victim.running).toBe(true);
    expect(victim.pid).not.toBe(victimPid);
    await cluster.waitHealthy(stream);
    const healed = await jsm.streams.info(stream);
    expect(healed.state.messages).toBe(2);
    expect(healed.cluster?.leader).toBeTruthy();
    expect([healed.cluster!.leader, ...(healed.cluster!.replicas ?? []).map((r) => r.name)].sort()).toEqual(['n1', 'n2', 'n3']);
    for (const r of healed.cluster!.replicas ?? []) expect(r.current).toBe(true);

    // What was published before the kill is still there: direct get and an ordered consumer.
    const first = await jsm.direct.getMessage(stream, { seq: before.seq });
    expect(first?.string()).toBe('before the kill');
    const oc = await js.consumers.get(stream);
    const bodies: string[] = [];
    const batch = await oc.fetch({ max_messages: 2, expires: 5_000 });
    for await (const m of batch) bodies.push(m.string());
    expect(bodies).toEqual(['before the kill', 'after the failover']);

    await jsm.streams.delete(stream);
    // Visible in the test output: how long the election took on this machine.
    console.info(`natsCluster.test: ${oldLeader} killed, ${newLeader} leads after ${electedMs} ms`);
  }, 40_000);

  it('stop() kills every node and removes its temp dir', async () => {
    await nc.close();
    const pids = cluster.nodes.map((n) => n.pid);
    expect(existsSync(cluster.dir)).toBe(true);
    await cluster.stop();
    for (const n of cluster.nodes) expect(n.running).toBe(false);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(existsSync(cluster.dir)).toBe(false);
    await cluster.stop(); // idempotent
  });
});
