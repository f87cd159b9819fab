// Roles split across instances: an HTTP-only node, two room hosts that divide the shards
// through KV leases, projections in one of them. Commands travel over NATS request/reply,
// wake-ups over NATS; when a room host dies its leases lapse and the other takes over,
// rebuilding the rooms from the log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Peekd } from '../../src/server.ts';
import { TestUser, enc } from '../helpers/matrix.ts';
import { splitDeployment, type SplitDeployment } from '../helpers/splitDeployment.ts';

const SHARDS = 8;
const LIFETIME_MS = 6_000;

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('roles split across processes', () => {
  let split: SplitDeployment;
  let http: Peekd;
  let hostA: Peekd;
  let hostB: Peekd;

  beforeAll(async () => {
    split = await splitDeployment({ shards: SHARDS, label: 'roles', env: { PEEKD_LEASE_TTL_MS: '1500', PEEKD_PEEK_LIFETIME_MS: String(LIFETIME_MS) } });
    hostA = await split.start('rooms,projections,federation');
    hostB = await split.start('rooms');
    http = await split.start('http');
  }, 60_000);

  afterAll(async () => {
    await split?.close();
  });

  it('divides the shards between the room hosts, serves the client API from the HTTP node, and survives a host dying', async () => {
    expect(http.host).toBeUndefined();
    expect(http.projections.size).toBe(0);
    // Every shard held by exactly one of the two hosts.
    await until('leases to cover every shard once', () => {
      const a = hostA.leases!.shards;
      const b = hostB.leases!.shards;
      return a.length > 0 && b.length > 0 && new Set([...a, ...b]).size === SHARDS && a.every((s) => !b.includes(s));
    });

    const alice = await TestUser.register(http.url!, 'alice');
    const bob = await TestUser.register(http.url!, 'bob');
    // Rooms until both hosts host some.
    const rooms: string[] = [];
    while (rooms.length < 12) rooms.push((await alice.createWorldReadableRoom()).room_id);
    const onB = rooms.filter((r) => hostB.leases!.shards.includes(hostB.naming.shardOf(r)));
    expect(onB.length).toBeGreaterThan(0);
    expect(onB.length).toBeLessThan(rooms.length);

    for (const r of rooms) expect((await bob.peek(r)).status).toBe(200);
    const first = await bob.sync();
    expect(Object.keys(first.rooms.peek).sort()).toEqual([...rooms].sort());

    // A long-poll on the HTTP node is woken by a message sent in a room hosted on B.
    const poll = bob.sync({ since: first.next_batch, timeout: 10_000 });
    const eventId = await alice.send(onB[0]!, 'across the bus');
    const woken = await poll;
    expect(woken.rooms.peek[onB[0]!].timeline.events.map((e: any) => e.event_id)).toContain(eventId);

    // B dies without a word: its NATS connection drops, its leases lapse, A takes its shards.
    await hostB.nc.close();
    await until('A to hold every shard', () => hostA.leases!.shards.length === SHARDS, 20_000);
    for (const r of onB) expect(typeof (await alice.send(r, 'still here'))).toBe('string');
    // A rebuilt B's rooms from the log: bob's peeks there are live, and they expire on A's timers.
    const again = await bob.sync({ since: woken.next_batch });
    for (const r of onB) expect(again.rooms.peek[r].timeline.events.at(-1).content.body).toBe('still here');
    const ended = await until(
      'the peeks to expire',
      async () => {
        const s = await bob.sync({ since: again.next_batch, timeout: 2_000 });
        return Object.keys(s.rooms.leave).length === rooms.length ? s : undefined;
      },
      LIFETIME_MS + 15_000,
    );
    expect(Object.keys(ended.rooms.leave).sort()).toEqual([...rooms].sort());
    // Reads go straight to the shared projection tables from the HTTP node.
    const state = await alice.req('GET', `/_matrix/client/v3/rooms/${enc(onB[0]!)}/state`);
    expect(state.status).toBe(200);
    expect(state.body.some((e: any) => e.type === 'm.room.history_visibility' && e.content.history_visibility === 'world_readable')).toBe(true);
  }, 90_000);
});
