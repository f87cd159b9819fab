// Room hosts coming and going under load, roles split: a graceful stop hands its shards
// over with no request failing, a host that joins takes a fair share, and a room with
// 5,000 members works across the command bus (replies carry what was appended, never the
// room's state).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Peekd } from '../../src/server.ts';
import { waitFor } from '../helpers/federation.ts';
import { TestUser } from '../helpers/matrix.ts';
import { splitDeployment, type SplitDeployment } from '../helpers/splitDeployment.ts';

const SHARDS = 12;

describe('room hosts joining and leaving, roles split', () => {
  let split: SplitDeployment;
  let http: Peekd;
  let hostA: Peekd;
  let hostB: Peekd;
  const start = (roles: string) => split.start(roles);

  beforeAll(async () => {
    split = await splitDeployment({ shards: SHARDS, label: 'handover', env: { PEEKD_LEASE_TTL_MS: '3000' } });
    hostA = await start('rooms,projections,federation');
    hostB = await start('rooms');
    http = await start('http');
  }, 60_000);

  afterAll(async () => {
    await split?.close();
  });

  const covered = (...hosts: Peekd[]) => {
    const all = hosts.flatMap((h) => h.leases!.shards);
    return all.length === SHARDS && new Set(all).size === SHARDS;
  };

  it('hands a stopping host’s shards over with no failed request, and gives a new host its share', async () => {
    await waitFor('A and B to share every shard', () => covered(hostA, hostB) && hostB.leases!.shards.length > 0, 20_000);
    const alice = await TestUser.register(http.url!, 'alice');
    const rooms: string[] = [];
    while (rooms.length < 8 || !rooms.some((r) => hostB.leases!.shards.includes(http.naming.shardOf(r)))) {
      rooms.push((await alice.createWorldReadableRoom()).room_id);
    }

    // Messages keep flowing into every room while B stops cleanly.
    const statuses: number[] = [];
    let sending = true;
    const load = (async () => {
      for (let i = 0; sending; i++) {
        const r = await alice.req('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(rooms[i % rooms.length]!)}/send/m.room.message/h${i}`, { msgtype: 'm.text', body: `m${i}` });
        statuses.push(r.status);
      }
    })();
    await waitFor('some messages before the stop', () => statuses.length >= 20);
    const before = statuses.length;
    await split.stop(hostB);
    await waitFor('A to hold every shard', () => hostA.leases!.shards.length === SHARDS, 10_000);
    await waitFor('messages after the handover', () => statuses.length >= before + 40, 20_000);
    sending = false;
    await load;
    expect(statuses.filter((s) => s !== 200)).toEqual([]);

    // A new host arrives: within a few lease rounds it holds its share and A lets go of it.
    const hostC = await start('rooms');
    await waitFor('C to take its share', () => hostC.leases!.shards.length >= SHARDS / 2 - 1 && covered(hostA, hostC), 20_000);
    expect(hostA.leases!.shards.filter((s) => hostC.leases!.shards.includes(s))).toEqual([]);
    for (const r of rooms) expect(typeof (await alice.send(r, 'after C joined'))).toBe('string');
  }, 90_000);

  it('serves a room with 5,000 members across the command bus', async () => {
    const alice = await TestUser.register(http.url!, 'crowdowner');
    const roomId = (await alice.createWorldReadableRoom()).room_id as string;
    // 100 joins per command: a command of 500 (each PDU built, hashed and signed) once got
    // no answer within the bus's retry window (lease TTL + 5 s: 8 s here) while the rest of
    // the suite loaded both cores; the test is about the room's size, not one command's.
    for (let i = 0; i < 5_000; i += 100) {
      const joins = Array.from({ length: 100 }, (_, k) => {
        const userId = `@member${i + k}:${split.serverName}`;
        return { type: 'm.room.member', sender: userId, state_key: userId, content: { membership: 'join' } };
      });
      const r = await http.bus.send({ type: 'SendEvents', roomId, events: joins });
      expect(r.roomEvents).toHaveLength(100);
    }
    const bob = await TestUser.register(http.url!, 'crowdpeeker');
    expect((await bob.peek(roomId)).status).toBe(200);
    const eventId = await alice.send(roomId, 'to the crowd');
    const seen = await bob.syncUntil(undefined, (b) => (b.rooms?.peek?.[roomId]?.timeline?.events ?? []).some((e: any) => e.event_id === eventId), 20_000);
    const section = seen.body.rooms.peek[roomId];
    const members = [...section.state.events, ...section.timeline.events].filter((e: any) => e.type === 'm.room.member');
    expect(members.length).toBeGreaterThanOrEqual(5_000);
  }, 90_000);
});
