import { it } from 'vitest';
import { DeliverPolicy, jetstream } from '@nats-io/jetstream';
import { EventLog } from '../../src/nats/eventLog';
import { createTestDatabase, createTestStreams } from '../helpers/services';
import { appendHistories, roomHistory } from '../helpers/peekLog';
import { auditProjection } from '../../src/projections/audit';
import { syncPeeksProjection } from '../../src/projections/syncPeeks';
import { federationPeeksProjection } from '../../src/projections/federationPeeks';
import { replayProjection } from '../../src/projections/rebuild';
import { ProjectionRunner } from '../../src/projections/runner';

it('bench', async () => {
  const s = await createTestStreams(8);
  const tdb = await createTestDatabase();
  const d = await tdb.open();
  try {
    const log = await EventLog.open(s.nc, s.naming);
    const h = new Map<string, object[]>();
    for (let i = 0; i < 400; i++) h.set(`!r${i}:example.org`, roomHistory(`!r${i}:example.org`, 256, i + 1));
    let t = performance.now();
    const placed = await appendHistories(log, s.naming, h, { concurrency: 48, chunk: 128 });
    console.log('append', placed.length, ((performance.now() - t) / 1000).toFixed(1));
    t = performance.now();
    const js = jetstream(s.nc);
    const c = await js.consumers.get(s.naming.streamName('peeks'), { filter_subjects: s.naming.allSubjects('peeks'), deliver_policy: DeliverPolicy.All });
    const msgs = await c.consume({ max_messages: 2000 });
    let n = 0;
    for await (const m of msgs) { n++; JSON.parse(Buffer.from(m.data).toString()); if (m.info.pending === 0) break; }
    await msgs.close();
    console.log('consume', n, ((performance.now() - t) / 1000).toFixed(1));
    const last = placed.at(-1)!.seq;
    t = performance.now();
    const runners = [auditProjection, syncPeeksProjection, federationPeeksProjection].map((p) => new ProjectionRunner(d.db, s.nc, s.naming, p));
    await Promise.all(runners.map((r) => r.start()));
    await Promise.all(runners.map((r) => r.waitFor(last)));
    await Promise.all(runners.map((r) => r.stop()));
    console.log('3 live runners', ((performance.now() - t) / 1000).toFixed(1));
    for (const p of [auditProjection, syncPeeksProjection, federationPeeksProjection]) {
      t = performance.now();
      await replayProjection({ db: d.db, nc: s.nc, naming: s.naming }, p as never);
      console.log('replay', p.name, ((performance.now() - t) / 1000).toFixed(1));
    }
    t = performance.now();
    await Promise.all([auditProjection, syncPeeksProjection, federationPeeksProjection].map((p) => replayProjection({ db: d.db, nc: s.nc, naming: s.naming }, p as never)));
    console.log('replay 3 concurrently', ((performance.now() - t) / 1000).toFixed(1));
  } finally {
    await d.close(); await tdb.drop(); await s.cleanup();
  }
}, 300_000);
