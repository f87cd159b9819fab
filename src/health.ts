// Health, readiness and the metrics read at scrape time.
//
// `GET /health`: the process runs. `GET /ready`: this process can do its work now — NATS
// and Postgres answer, the migrations and streams are in place, every projection it runs
// is within PEEKD_READY_MAX_LAG events of its stream's head and, with roles split, a room
// host holds shard leases; never while shutting down. A load balancer sends traffic only
// to ready processes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { sql } from 'drizzle-orm';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ActorHost } from './actors/actorHost.ts';
import type { JobLeases, ShardLeases } from './cluster/shardLeases.ts';
import type { Config } from './config.ts';
import type { Naming } from './events/subjects.ts';
import type { ProjectionRunner } from './projections/runner.ts';
import type { Database } from './store/db.ts';
import type { SyncNotifier } from './syncapi/notifier.ts';
import { MIGRATIONS_DIR, rowsOf } from './store/db.ts';
import { PROJECTIONS } from './projections/index.ts';
import type { StreamKind } from './events/subjects.ts';
import { seqOfPosition } from './events/envelope.ts';
import {
  boundedLabel,
  federationQueueDepth,
  jobLeasesHeld,
  livePeeks,
  metricsRegistry,
  projectionLag,
  projectionPosition,
  readyGauge,
  roomActors,
  shardLeasesHeld,
  streamHead,
  syncWaiters,
} from './metrics.ts';

/** How long one readiness check may take before it counts as "does not answer". */
const CHECK_TIMEOUT_MS = 2_000;

export interface Readiness {
  ready: boolean;
  /** Why not, one line per failed check. */
  reasons: string[];
}

/** What health checks read of a running peekd (src/peekd.ts). */
export interface HealthSubject {
  config: Config;
  nc: NatsConnection;
  naming: Naming;
  database: Database;
  projections: Map<string, ProjectionRunner>;
  host?: ActorHost;
  leases?: ShardLeases;
  jobs: JobLeases[];
  notifier: SyncNotifier;
  committed(projection: string): number;
}

function timeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
    }),
  ]);
}

function migrationCount(): number {
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
  return journal.entries.length;
}

export class Health {
  /** Set when shutdown begins: from then on /ready answers 503. */
  private draining = false;
  private readonly migrations = migrationCount();

  constructor(private readonly peekd: HealthSubject) {}

  drain(): void {
    this.draining = true;
    readyGauge.set(0);
  }

  get shuttingDown(): boolean {
    return this.draining;
  }

  /** The stream sequence of the last message `projection` has committed (positions count events within messages). */
  private committedSeq(projection: string): number {
    return seqOfPosition(this.peekd.committed(projection));
  }

  /** The head of each stream (last sequence), from JetStream. */
  private async heads(): Promise<Record<StreamKind, number>> {
    const jsm = await jetstreamManager(this.peekd.nc);
    const [peeks, rooms] = await Promise.all([jsm.streams.info(this.peekd.naming.streamName('peeks')), jsm.streams.info(this.peekd.naming.streamName('rooms'))]);
    return { peeks: peeks.state.last_seq, rooms: rooms.state.last_seq };
  }

  /** Projections this process runs now (all in one: all of them; split: those whose job it holds). */
  private running(): string[] {
    const { projections, jobs } = this.peekd;
    const allInOne = jobs.length === 0;
    const held = new Set(jobs.flatMap((j) => j.held.map(String)));
    return [...projections.keys()].filter((name) => allInOne || held.has(name));
  }

  async readiness(): Promise<Readiness> {
    const reasons: string[] = [];
    if (this.draining) return { ready: false, reasons: ['shutting down'] };
    const { nc, database, config } = this.peekd;
    const check = async (what: string, fn: () => Promise<void>) => {
      try {
        await timeout(fn(), what);
      } catch (err) {
        reasons.push(err instanceof Error ? err.message : String(err));
      }
    };
    let heads: Record<StreamKind, number> | undefined;
    await Promise.all([
      check('NATS', async () => {
        if (nc.isClosed()) throw new Error('the NATS connection is closed');
        await nc.flush();
        try {
          heads = await this.heads();
        } catch (err) {
          throw new Error(`the streams are not in place: ${(err as Error).message}`, { cause: err });
        }
      }),
      check('Postgres', async () => {
        let applied: number;
        try {
          const rows = rowsOf<{ n: number }>(await database.db.execute(sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`));
          applied = Number(rows[0]?.n ?? 0);
        } catch (err) {
          throw new Error(`Postgres does not answer: ${(err as Error).message}`, { cause: err });
        }
        if (applied < this.migrations) throw new Error(`the database has ${applied} of ${this.migrations} migrations`);
      }),
    ]);
    if (heads) {
      for (const name of this.running()) {
        const p = PROJECTIONS.find((x) => x.name === name);
        if (!p) continue;
        const lag = heads[p.stream] - this.committedSeq(name);
        if (lag > config.readyMaxLag) reasons.push(`projection ${name} is ${lag} messages behind its stream (more than PEEKD_READY_MAX_LAG=${config.readyMaxLag})`);
      }
    }
    const { leases } = this.peekd;
    if (leases && leases.shards.length === 0) reasons.push('this room host holds no shard lease');
    const ready = reasons.length === 0;
    readyGauge.set(ready ? 1 : 0);
    return { ready, reasons };
  }

  /** Sets the gauges that describe this process's state, then renders every metric. */
  async metrics(): Promise<string> {
    await this.observe().catch(() => undefined); // a scrape still gets what the process counted
    return metricsRegistry.metrics();
  }

  private async observe(): Promise<void> {
    const { host, leases, jobs, notifier, database } = this.peekd;
    roomActors.set(host?.activeRooms ?? 0);
    syncWaiters.set(notifier.waiting);
    shardLeasesHeld.set(leases?.shards.length ?? 0);
    jobLeasesHeld.set(jobs.reduce((n, j) => n + j.held.length, 0));
    await Promise.all([
      this.readiness(),
      (async () => {
        const heads = await timeout(this.heads(), 'NATS');
        streamHead.set({ stream: 'peeks' }, heads.peeks);
        streamHead.set({ stream: 'rooms' }, heads.rooms);
        for (const p of PROJECTIONS) {
          const position = this.committedSeq(p.name);
          projectionPosition.set({ projection: p.name }, position);
          projectionLag.set({ projection: p.name }, Math.max(0, heads[p.stream] - position));
        }
      })(),
      (async () => {
        const rows = rowsOf<{ kind: string; n: number }>(
          await database.db.execute(sql`
            SELECT 'device' AS kind, count(*)::int AS n FROM syncapi_peeks WHERE ended_seq IS NULL
            UNION ALL SELECT 'inbound', count(*)::int FROM federationsender_inbound_peeks
            UNION ALL SELECT 'outbound', count(*)::int FROM federationsender_outbound_peeks`),
        );
        for (const r of rows) livePeeks.set({ kind: r.kind }, Number(r.n));
      })(),
      (async () => {
        // The pending transaction and the outbox entries of each destination, deepest first.
        const rows = rowsOf<{ destination: string; n: number }>(
          await database.db.execute(sql`
            SELECT destination, sum(n)::int AS n FROM (
              SELECT destination, 1 AS n FROM federationsender_pending_txns
              UNION ALL SELECT destination, 1 FROM federationsender_outbox
            ) q GROUP BY destination ORDER BY n DESC LIMIT 1000`),
        );
        federationQueueDepth.reset();
        const depth = new Map<string, number>();
        for (const r of rows) {
          const label = boundedLabel('destination', r.destination);
          depth.set(label, (depth.get(label) ?? 0) + Number(r.n));
        }
        for (const [destination, n] of depth) federationQueueDepth.set({ destination }, n);
      })(),
    ]);
  }
}
