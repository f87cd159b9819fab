// A batch that changes nothing in a projection's tables (device peeks, for the federation
// projections) commits no transaction: the runner's position moves in memory, and the
// checkpoint follows with its next write, within CHECKPOINT_LAG_MS, or when it stops.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeEnvelope, throughSeq } from '../../src/events/envelope.ts';
import type { PeekEvent, PeekRef } from '../../src/events/peekEvents.ts';
import { EventLog } from '../../src/nats/eventLog.ts';
import { federationPeeksProjection } from '../../src/projections/federationPeeks.ts';
import { CHECKPOINT_LAG_MS, ProjectionRunner, readCheckpoint } from '../../src/projections/runner.ts';
import type { Database } from '../../src/store/db.ts';
import { federationsenderInboundPeeks } from '../../src/store/schema.ts';
import { createTestDatabase, createTestStreams, type TestDatabase, type TestStreams } from '../helpers/services.ts';
import { until } from '../helpers/until.ts';

const T0 = 1_700_000_000_000;
let streams: TestStreams;
let database: TestDatabase;
let opened: Database;
let log: EventLog;

beforeAll(async () => {
  streams = await createTestStreams(8);
  database = await createTestDatabase();
  opened = await database.open();
  log = await EventLog.open(streams.nc, streams.naming);
});

afterAll(async () => {
  await opened?.close();
  await database?.drop();
  await streams?.cleanup();
});

async function append(roomId: string, expected: number, events: PeekEvent[]): Promise<number> {
  return (await log.append('peeks', roomId, encodeEnvelope(`t:${randomUUID()}`, events), expected, `t:${randomUUID()}`)).seq;
}

const device = (n: number): PeekRef => ({ kind: 'device', userId: `@u${n}:example.org`, deviceId: 'D' });
const started = (roomId: string, peek: PeekRef, at: number): PeekEvent => ({ type: 'PeekStarted', v: 1, roomId, peek, at, expiresAt: at + 3_600_000, roomSeq: 1000 }) as PeekEvent;

describe('batches a projection does not touch', () => {
  it('move the position without a transaction; the checkpoint follows within the lag, and with the next write', async () => {
    const { db } = opened;
    const roomId = `!untouched.${randomUUID()}:example.org`;
    let seq = 0;
    for (let i = 0; i < 5; i++) seq = await append(roomId, seq, [started(roomId, device(i), T0 + i)]);
    const runner = new ProjectionRunner(opened.db, streams.nc, streams.naming, federationPeeksProjection);
    await runner.start();
    try {
      await runner.waitFor(throughSeq(seq));
      // Visible to waiters at once, but nothing written yet.
      expect(runner.committed).toBe(throughSeq(seq));
      expect(await readCheckpoint(db, federationPeeksProjection.name, 'peeks')).toBeLessThan(throughSeq(seq));
      // Within the lag, the checkpoint is stored on its own.
      const stored = throughSeq(seq);
      await until('the checkpoint stored on its own', async () => (await readCheckpoint(db, federationPeeksProjection.name, 'peeks')) === stored, CHECKPOINT_LAG_MS + 5_000, 25);
      // A device peek again (position only), then an inbound peek: one transaction, which stores both.
      seq = await append(roomId, seq, [started(roomId, device(9), T0 + 9)]);
      await runner.waitFor(throughSeq(seq));
      seq = await append(roomId, seq, [started(roomId, { kind: 'inbound', server: 'peer.example', peekId: 'p1' }, T0 + 10)]);
      await runner.waitFor(throughSeq(seq));
      expect(await readCheckpoint(db, federationPeeksProjection.name, 'peeks')).toBe(throughSeq(seq));
      expect((await db.select().from(federationsenderInboundPeeks)).map((r) => [r.roomId, r.serverName, r.peekId])).toEqual([[roomId, 'peer.example', 'p1']]);
      // Untouched again, then a stop: the stop stores the position, so a restart does not go back.
      seq = await append(roomId, seq, [started(roomId, device(10), T0 + 11)]);
      await runner.waitFor(throughSeq(seq));
    } finally {
      await runner.stop();
    }
    expect(await readCheckpoint(db, federationPeeksProjection.name, 'peeks')).toBe(throughSeq(seq));
  });
});
