// Projections never stall silently (issue 10, point 6), against a real JetStream log and a
// real database: a failed commit on the last batch of a quiet stream is retried without any
// new event; a wait for a position that never comes ends in a retryable error; a message
// that cannot be decoded is quarantined (a row written with the checkpoint that passes it, a
// log line, a metric), the stream goes on past it, and a rebuild agrees.
import { randomUUID } from 'node:crypto';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { and, asc, eq, sql } from 'drizzle-orm';
import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { encodeEnvelope, position, throughSeq } from '../../src/events/envelope.ts';
import type { PeekEvent } from '../../src/events/peekEvents.ts';
import { metricsRegistry } from '../../src/metrics.ts';
import { isTransient, ServiceUnavailableError } from '../../src/nats/errors.ts';
import { auditProjection } from '../../src/projections/audit.ts';
import { federationPeeksProjection } from '../../src/projections/federationPeeks.ts';
import type { PeekProjection } from '../../src/projections/projection.ts';
import { replayProjection, verifyProjection } from '../../src/projections/rebuild.ts';
import { ProjectionBehindError, ProjectionRunner, QUARANTINE_PAYLOAD_MAX_BYTES, readCheckpoint, RETRY_MAX_MS } from '../../src/projections/runner.ts';
import { syncPeeksProjection } from '../../src/projections/syncPeeks.ts';
import type { Database, Db } from '../../src/store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, peekAudit, projectionQuarantine, syncapiPeeks } from '../../src/store/schema.ts';
import { createTestDatabase, createTestStreams, type TestStreams } from '../helpers/services.ts';

const T0 = 1_700_000_000_000;
const ROOM = '!stalls.room:example.org';

interface World {
  streams: TestStreams;
  js: JetStreamClient;
  db: Db;
}

/** A fresh database and stream prefix for one test, released whatever happens. */
async function withWorld(fn: (w: World) => Promise<void>): Promise<void> {
  const database = await createTestDatabase();
  let opened: Database | undefined;
  let streams: TestStreams | undefined;
  try {
    opened = await database.open();
    streams = await createTestStreams(4);
    await fn({ streams, js: jetstream(streams.nc), db: opened.db });
  } finally {
    await streams?.cleanup();
    await opened?.close();
    await database.drop();
  }
}

function started(i: number): PeekEvent {
  return { type: 'PeekStarted', v: 1, roomId: ROOM, peek: { kind: 'device', userId: `@u${i}:example.org`, deviceId: `D${i}` }, at: T0 + i, expiresAt: T0 + i + 3_600_000 };
}

/** Publishes raw bytes on `subject` (default: the room's PEEKS subject); returns the stream sequence. */
async function publish(w: World, data: Uint8Array | string, subject = w.streams.naming.roomSubject('peeks', ROOM)): Promise<number> {
  const ack = await w.js.publish(subject, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, { msgID: randomUUID() });
  return ack.seq;
}

const publishEvents = (w: World, events: object[]) => publish(w, encodeEnvelope(randomUUID(), events));

/** A logger whose lines land in `lines` (parsed). */
function capturingLogger(lines: Record<string, unknown>[]): Logger {
  return pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
}

async function quarantinedCount(projection: string): Promise<number> {
  const metric = await metricsRegistry.getSingleMetric('peekd_projection_quarantined_total')!.get();
  return metric.values.filter((v) => v.labels.projection === projection).reduce((n, v) => n + v.value, 0);
}

async function quarantineRows(db: Db, projection: string) {
  const rows = await db.select().from(projectionQuarantine).where(eq(projectionQuarantine.projection, projection)).orderBy(asc(projectionQuarantine.streamSeq));
  return rows.map((r) => ({ ...r, payload: Buffer.from(r.payload) }));
}

/** `projection` whose `apply` hits a real Postgres error `times` times on a batch reaching `seq`. */
function failingOn(projection: PeekProjection, seq: () => number, times: number): { projection: PeekProjection; left: () => number } {
  let left = times;
  return {
    left: () => left,
    projection: {
      ...projection,
      apply: async (tx, batch) => {
        if (left > 0 && batch.some((b) => b.seq >= seq())) {
          left--;
          await tx.execute(sql`select 1 / 0`); // division by zero: the transaction is refused
        }
        await projection.apply(tx, batch);
      },
    },
  };
}

describe('projections never stall silently', () => {
  it('retries a failed commit of the last batch of a quiet stream without any new event', async () => {
    await withWorld(async (w) => {
      const seqs: number[] = [];
      for (let i = 0; i < 5; i++) seqs.push(await publishEvents(w, [started(i)]));
      const last = position(seqs.at(-1)!, 0);
      // Three refusals of the batch that holds the last event (earlier batches may commit between them).
      const failing = failingOn(auditProjection, () => last, 3);
      const logs: Record<string, unknown>[] = [];
      const runner = new ProjectionRunner(w.db, w.streams.nc, w.streams.naming, failing.projection, { logger: capturingLogger(logs) });
      try {
        await runner.start();
        // Nothing is published from here on: only the runner's own retry can get it there,
        // within the bound (the three retries wait well under a second between them).
        await runner.waitFor(throughSeq(seqs.at(-1)!), 8_000);
        expect(failing.left()).toBe(0);
      } finally {
        await runner.stop();
      }
      expect(await readCheckpoint(w.db, 'audit', 'peeks')).toBe(throughSeq(seqs.at(-1)!));
      expect((await w.db.select({ seq: peekAudit.seq }).from(peekAudit).orderBy(asc(peekAudit.seq))).map((r) => r.seq)).toEqual(seqs.map((s) => position(s, 0)));
      // Each refusal was reported, with its retry delay.
      const failures = logs.filter((l) => l.msg === 'projection failed; resuming from its checkpoint');
      expect(failures).toHaveLength(3);
      for (const f of failures) {
        expect(f).toMatchObject({ projection: 'audit', level: 50 });
        expect(f.retryInMs).toBeGreaterThanOrEqual(50);
        expect(f.retryInMs).toBeLessThanOrEqual(RETRY_MAX_MS);
      }
    });
  });

  it('backs off, doubling, while every commit is refused; then nothing is lost or doubled', async () => {
    await withWorld(async (w) => {
      const first: number[] = [];
      for (let i = 0; i < 3; i++) first.push(await publishEvents(w, [started(i)]));
      const failing = failingOn(syncPeeksProjection, () => 0, 5);
      const logs: Record<string, unknown>[] = [];
      const runner = new ProjectionRunner(w.db, w.streams.nc, w.streams.naming, failing.projection, { logger: capturingLogger(logs) });
      try {
        await runner.start();
        await runner.waitFor(throughSeq(first.at(-1)!), 10_000);
        expect(failing.left()).toBe(0);
        const more = await publishEvents(w, [started(3)]);
        await runner.waitFor(throughSeq(more), 10_000);
      } finally {
        await runner.stop();
      }
      expect(logs.map((l) => l.retryInMs)).toEqual([50, 100, 200, 400, 800]);
      expect(await w.db.select({ userId: syncapiPeeks.userId }).from(syncapiPeeks).orderBy(asc(syncapiPeeks.startedSeq))).toEqual([0, 1, 2, 3].map((i) => ({ userId: `@u${i}:example.org` })));
    });
  });

  it('ends a wait for a position that never comes in a retryable error within its timeout', async () => {
    await withWorld(async (w) => {
      const seq = await publishEvents(w, [started(0)]);
      const runner = new ProjectionRunner(w.db, w.streams.nc, w.streams.naming, auditProjection, { waitTimeoutMs: 250, logger: capturingLogger([]) });
      try {
        await runner.start();
        await runner.waitFor(throughSeq(seq), 10_000);
        const never = throughSeq(seq + 1_000);

        // A timeout of its own.
        let t0 = Date.now();
        const err = await runner.waitFor(never, 300).then(
          () => undefined,
          (e: unknown) => e,
        );
        const waited = Date.now() - t0;
        expect(err).toBeInstanceOf(ProjectionBehindError);
        expect(err).toBeInstanceOf(ServiceUnavailableError); // what the HTTP layer answers 503 with Retry-After
        expect(isTransient(err)).toBe(true);
        expect((err as ProjectionBehindError).projection).toBe('audit');
        expect((err as ProjectionBehindError).seq).toBe(never);
        expect((err as ProjectionBehindError).committed).toBe(throughSeq(seq));
        expect(waited).toBeGreaterThanOrEqual(290);
        expect(waited).toBeLessThan(2_000);

        // The runner's default.
        t0 = Date.now();
        await expect(runner.waitFor(never)).rejects.toBeInstanceOf(ProjectionBehindError);
        expect(Date.now() - t0).toBeLessThan(2_000);

        // A timed-out wait leaves nothing behind: later waits still resolve.
        const next = await publishEvents(w, [started(1)]);
        await runner.waitFor(throughSeq(next), 10_000);
        expect(runner.committed).toBe(throughSeq(next));
      } finally {
        await runner.stop();
      }
    });
  });

  it('federation_peeks passes over messages that cannot hold a server peek: it decodes and quarantines only the others, live and rebuilt alike', async () => {
    await withWorld(async (w) => {
      const naming = w.streams.naming;
      const server = (kind: 'inbound' | 'outbound', i: number): PeekEvent => ({
        type: 'PeekStarted',
        v: 1,
        roomId: ROOM,
        peek: { kind, server: `s${i}.example`, peekId: `p${i}` },
        at: T0 + i,
        expiresAt: T0 + i + 60_000,
        renewalIntervalMs: 30_000,
        roomSeq: 0,
      });
      await publishEvents(w, [started(0)]);
      const plain = await publish(w, 'this is { not JSON'); // no server peek can be in it
      await publishEvents(w, [started(1), server('inbound', 2)]);
      const marked = await publish(w, '{"kind":"inbound" and then not JSON'); // may have been one: quarantined
      await publishEvents(w, [server('outbound', 3)]);
      await publishEvents(w, [{ ...started(4), peek: { kind: 'device', userId: '@u4:example.org', deviceId: 'inbound' } }]);
      const last = await publishEvents(w, [started(5)]);
      const through = throughSeq(last);

      // Live, sharing one read of the stream with audit (which decodes and quarantines everything).
      const projections = [federationPeeksProjection, auditProjection];
      const runners = projections.map((p) => new ProjectionRunner(w.db, w.streams.nc, naming, p, { logger: capturingLogger([]) }));
      try {
        await Promise.all(runners.map((r) => r.start()));
        await Promise.all(runners.map((r) => r.waitFor(through, 10_000)));
      } finally {
        await Promise.all(runners.map((r) => r.stop()));
      }
      expect((await w.db.select().from(federationsenderInboundPeeks)).map((r) => r.serverName)).toEqual(['s2.example']);
      expect((await w.db.select().from(federationsenderOutboundPeeks)).map((r) => r.serverName)).toEqual(['s3.example']);
      expect((await quarantineRows(w.db, 'federation_peeks')).map((r) => r.streamSeq)).toEqual([marked]);
      expect((await quarantineRows(w.db, 'audit')).map((r) => r.streamSeq)).toEqual([plain, marked]);
      expect(await readCheckpoint(w.db, 'federation_peeks', 'peeks')).toBe(through);

      // A rebuild decodes only the four messages that may hold a server peek, and agrees.
      let decodes = 0;
      const counting: PeekProjection = {
        ...federationPeeksProjection,
        decode: (data) => {
          decodes++;
          return federationPeeksProjection.decode(data);
        },
      };
      const deps = { db: w.db, nc: w.streams.nc, naming, logger: capturingLogger([]) };
      const verified = await verifyProjection(deps, counting);
      expect(verified.equal).toBe(true);
      expect(verified.quarantine).toEqual({ liveRows: 1, rebuiltRows: 1, equal: true, differences: [] });
      expect(decodes).toBe(4);
    });
  });

  it('quarantines undecodable messages in the transaction that passes them, goes on past them, and a rebuild agrees', async () => {
    await withWorld(async (w) => {
      const naming = w.streams.naming;
      const stream = naming.streamName('peeks');
      const good: number[] = []; // positions of the events that must be projected
      const bad: { seq: number; payload: Buffer; error: RegExp }[] = [];
      const addBad = async (payload: Buffer, error: RegExp, subject?: string) => bad.push({ seq: await publish(w, payload, subject), payload, error });

      good.push(position(await publishEvents(w, [started(0)]), 0));
      await addBad(Buffer.from('this is { not JSON', 'utf8'), /^cannot decode: .*JSON/);
      good.push(position(await publishEvents(w, [started(1)]), 0));
      await addBad(Buffer.from(JSON.stringify({ envelope: 2, commandId: 'x', events: [started(9)] }), 'utf8'), /^unknown envelope version 2$/);
      good.push(position(await publishEvents(w, [started(2)]), 0));
      // An envelope of two: the first event is known, the second is not (it keeps its index).
      const partial = await publishEvents(w, [started(3), { type: 'PeekStarted', v: 9, roomId: ROOM }]);
      good.push(position(partial, 0));
      bad.push({ seq: partial, payload: Buffer.alloc(0), error: /^event 1 of 2: type "PeekStarted", v 9$/ });
      await addBad(Buffer.alloc(QUARANTINE_PAYLOAD_MAX_BYTES + 5_000, 0xff), /^cannot decode: /);
      await addBad(Buffer.from(JSON.stringify(started(4)), 'utf8'), /^not a peeks room subject$/, `${naming.subjectRoot('peeks')}.not-a-room`);
      const lastSeq = await publishEvents(w, [started(5)]);
      good.push(position(lastSeq, 0));
      const through = throughSeq(lastSeq);
      bad.sort((a, b) => a.seq - b.seq);

      const projections = [auditProjection, syncPeeksProjection];
      const before = Object.fromEntries(await Promise.all(projections.map(async (p) => [p.name, await quarantinedCount(p.name)] as const)));
      const logs: Record<string, unknown>[] = [];
      const runners = projections.map((p) => new ProjectionRunner(w.db, w.streams.nc, naming, p, { logger: capturingLogger(logs), batchSize: 2 }));
      try {
        await Promise.all(runners.map((r) => r.start()));
        await Promise.all(runners.map((r) => r.waitFor(through, 10_000)));
      } finally {
        await Promise.all(runners.map((r) => r.stop()));
      }

      // The good events, including those after the bad messages, are all projected.
      expect((await w.db.select({ seq: peekAudit.seq }).from(peekAudit).orderBy(asc(peekAudit.seq))).map((r) => r.seq)).toEqual(good);
      expect((await w.db.select({ seq: syncapiPeeks.startedSeq }).from(syncapiPeeks).orderBy(asc(syncapiPeeks.startedSeq))).map((r) => r.seq)).toEqual(good);

      for (const p of projections) {
        expect(await readCheckpoint(w.db, p.name, p.stream)).toBe(through);
        // One row per bad message, at its stream sequence, with what was wrong.
        const rows = await quarantineRows(w.db, p.name);
        expect(rows.map((r) => r.streamSeq)).toEqual(bad.map((b) => b.seq));
        rows.forEach((r, i) => {
          const b = bad[i]!;
          expect(r.stream).toBe(stream);
          expect(r.error).toMatch(b.error);
          expect(r.quarantinedAt).toBeGreaterThan(T0);
          if (b.seq === partial) return; // its payload: the whole two-event envelope
          expect(r.payloadBytes).toBe(b.payload.length);
          expect(r.payload.equals(b.payload.subarray(0, QUARANTINE_PAYLOAD_MAX_BYTES))).toBe(true);
        });
        expect(rows.find((r) => r.payloadBytes > QUARANTINE_PAYLOAD_MAX_BYTES)!.payload.length).toBe(QUARANTINE_PAYLOAD_MAX_BYTES);
        expect(rows.at(-1)!.subject).toBe(`${naming.subjectRoot('peeks')}.not-a-room`);
        expect(rows[0]!.subject).toBe(naming.roomSubject('peeks', ROOM));

        // The metric went up by one per message, and a warning names each.
        expect((await quarantinedCount(p.name)) - before[p.name]!).toBe(bad.length);
        const warned = logs.filter((l) => l.projection === p.name && l.level === 40);
        expect(warned.map((l) => l.seq)).toEqual(bad.map((b) => b.seq));
        for (const l of warned) {
          expect(l.stream).toBe(stream);
          expect(typeof l.reason).toBe('string');
        }
      }
      // The metric is in the registry's exposition.
      expect(await metricsRegistry.metrics()).toMatch(/peekd_projection_quarantined_total\{projection="audit"\} \d+/);

      // A rebuild of the projection gives the same tables and the same quarantine.
      const deps = { db: w.db, nc: w.streams.nc, naming, logger: capturingLogger(logs) };
      const liveAudit = await w.db.select().from(peekAudit).orderBy(asc(peekAudit.seq));
      const liveQuarantine = await quarantineRows(w.db, 'audit');
      const verified = await verifyProjection(deps, auditProjection);
      expect(verified.equal).toBe(true);
      expect(verified.quarantine).toEqual({ liveRows: bad.length, rebuiltRows: bad.length, equal: true, differences: [] });
      const counted = await quarantinedCount('audit');
      await replayProjection(deps, auditProjection);
      expect(await w.db.select().from(peekAudit).orderBy(asc(peekAudit.seq))).toEqual(liveAudit);
      expect(await quarantineRows(w.db, 'audit')).toEqual(liveQuarantine); // rows kept keep their first time
      expect(await quarantinedCount('audit')).toBe(counted); // nothing newly quarantined
      expect(await readCheckpoint(w.db, 'audit', 'peeks')).toBe(through);

      // A replay quarantines what it meets, as the runner does: rows lost are found again,
      // and the other projection's rows are left alone.
      await w.db.delete(projectionQuarantine).where(and(eq(projectionQuarantine.projection, 'audit'), eq(projectionQuarantine.streamSeq, bad[0]!.seq)));
      const broken = await verifyProjection(deps, auditProjection);
      expect(broken.equal).toBe(false);
      expect(broken.quarantine.differences).toEqual([{ side: 'rebuilt', stream, streamSeq: bad[0]!.seq }]);
      await replayProjection(deps, auditProjection);
      expect((await quarantineRows(w.db, 'audit')).map((r) => r.streamSeq)).toEqual(bad.map((b) => b.seq));
      expect(await quarantinedCount('audit')).toBe(counted + 1);
      expect((await quarantineRows(w.db, 'sync_peeks')).map((r) => r.streamSeq)).toEqual(bad.map((b) => b.seq));
      expect((await verifyProjection(deps, auditProjection)).equal).toBe(true);

      // A runner from sequence 1 on an empty database finds the same messages.
      const fresh = await createTestDatabase();
      const db2 = await fresh.open();
      try {
        const again = new ProjectionRunner(db2.db, w.streams.nc, naming, auditProjection, { logger: capturingLogger([]) });
        try {
          await again.start();
          await again.waitFor(through, 10_000);
        } finally {
          await again.stop();
        }
        expect((await quarantineRows(db2.db, 'audit')).map(({ quarantinedAt: _, ...r }) => r)).toEqual(liveQuarantine.map(({ quarantinedAt: _, ...r }) => r));
      } finally {
        await db2.close();
        await fresh.drop();
      }
    });
  });
});
