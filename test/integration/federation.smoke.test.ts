import { afterAll, beforeAll, expect, it } from 'vitest';
import { startFederation, waitFor, inboundPeeks, type Federation } from '../helpers/federation';
import { roomsIn, TestUser, timelineOf } from '../helpers/matrix';

let fed: Federation;
beforeAll(async () => {
  const t = Date.now();
  fed = await startFederation({ servers: 2, env: { PEEKD_INBOUND_RENEWAL_INTERVAL_MS: '2000', PEEKD_OUTBOUND_IDLE_MS: '3000' } });
  console.log('start took', Date.now() - t);
});
afterAll(async () => { const t = Date.now(); await fed?.cleanup(); console.log('cleanup took', Date.now() - t); });

it('smoke', async () => {
  const [A, B] = fed.servers as [any, any];
  const alice = await TestUser.register(A.url, 'alice');
  const room = await alice.createWorldReadableRoom({ room_alias_name: 'smoke' });
  await alice.send(room.room_id, 'hello');
  const bob = await TestUser.register(B.url, 'bob');
  const s0 = await bob.sync();
  const p = await bob.peek(`#smoke:${A.name}`);
  console.log(p.status, p.body);
  const s1 = await bob.sync({ since: s0.next_batch });
  console.log(JSON.stringify(timelineOf(s1.rooms.peek[room.room_id])));
  const t = Date.now();
  await alice.send(room.room_id, 'next');
  const r = await bob.syncUntil(s1.next_batch, (b) => timelineOf(b.rooms?.peek?.[room.room_id]).some((e) => e.body === 'next'));
  console.log('arrived in', Date.now() - t);
  console.log(await inboundPeeks(A));
});
