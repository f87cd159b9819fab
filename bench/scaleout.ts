// The "scale-out" scenario: room-command throughput with the roles split, ONE `rooms`
// process against TWO. One peekd process runs `projections,federation`; room hosts
// (`rooms` only) take shard leases in NATS KV and serve commands over NATS request/reply;
// the load side sends peek / renew / unpeek commands through a NatsCommandBus, as an HTTP
// process would. First one rooms process holds every shard; then a second one starts, the
// leases rebalance (32 + 32), and the same load runs again.
import { jetstreamManager } from '@nats-io/jetstream';
import { readFileSync, rmSync } from 'node:fs';
import { Naming } from '../src/events/subjects.ts';
import { freePort } from '../src/nats/freePorts.ts';
import { deleteStreams } from '../src/nats/streams.ts';
import { benchPeekdEnv, coresReport, cpuBetween, cpuSample, fmtNum, type CpuSample, log, logPath, round, sleep, uniqueName, type Row, type ScenarioResult, type TempDatabase } from './harness.ts';
import { Child } from './ipc.ts';
import type { BenchContext, Scenario } from './scenario.ts';

const SHARDS = 64;

interface CycleResult {
  seconds: number;
  ok: number;
  errors: number;
  lastError?: string;
  retries: number;
  perSecond: number;
  latency: { p50: number; p90: number; p99: number; mean: number; max: number };
}

/** A bench/scaleworker.ts process (`name` in logs and errors), registered in `children` before it is ready. */
function startWorker(name: string, env: Record<string, string>, children: Child[]): Promise<Child> {
  return Child.start({ module: 'scaleworker', name, env, nodeFlags: ['--max-old-space-size=4096'], logFile: logPath(`scale-out-${name}`), onSpawn: (c) => children.push(c) });
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+/g, ' ').trim();
  } catch {
    return '';
  }
}

/**
 * cpuBetween, with Postgres split into this run's database and the rest (a backend's
 * command line names its database), and the busiest processes that are not ours named:
 * the machine is shared, and what else ran during a window changes its numbers.
 */
function attributeCpu(a: CpuSample, b: CpuSample, roles: Record<string, number>, wallSeconds: number, dbName: string): { cores: Record<string, number>; others: string[] } {
  const cores = cpuBetween(a, b, roles, wallSeconds);
  const ours = new Set(Object.values(roles));
  let pgOurs = 0;
  let pgAll = 0;
  const others: { what: string; cores: number }[] = [];
  for (const [pid, now] of b) {
    const d = now.ticks - (a.get(pid)?.ticks ?? 0);
    if (d <= 0 || ours.has(pid)) continue;
    if (now.comm.startsWith('postgres')) {
      pgAll += d;
      if (cmdlineOf(pid).includes(` ${dbName} `)) pgOurs += d;
    } else if (!now.comm.startsWith('nats-server')) {
      others.push({ what: `${now.comm} ${pid} (${cmdlineOf(pid).slice(0, 70) || '?'})`, cores: d });
    }
  }
  if (pgAll > 0 && cores.postgres !== undefined) {
    const share = pgOurs / pgAll;
    cores['postgres (this run)'] = round(cores.postgres * share, 2);
    cores['postgres (other databases)'] = round(cores.postgres * (1 - share), 2);
    delete cores.postgres;
  }
  // Ticks → cores with the same scale cpuBetween used for "other processes".
  const otherTicks = others.reduce((s, o) => s + o.cores, 0);
  const scale = otherTicks > 0 ? (cores['other processes'] ?? 0) / otherTicks : 0;
  const top = others
    .sort((x, y) => y.cores - x.cores)
    .slice(0, 3)
    .filter((o) => o.cores * scale >= 0.02)
    .map((o) => `${o.what} ${round(o.cores * scale, 2)}`);
  return { cores, others: top };
}

interface Options {
  rooms: number;
  concurrency: number;
  warmupMs: number;
  measureMs: number;
}

interface RunResult {
  processes: number;
  cycle: CycleResult;
  cpu: Record<string, number>;
  /** The busiest processes on the machine that are not this run's. */
  others: string[];
  /** Shards each rooms process held during the run. */
  shards: number[];
  /** The fewest shards each held during the measured window, sampled every 500 ms. */
  firm: number[];
  /** How long the warm-up took (at least `warmupMs`, and until every room had a command). */
  warmupMs: number;
  /** JetStream consumers on this run's PEEKS and ROOMS streams at the end of the measured window. */
  consumers: number;
}

async function runScaleOut(ctx: BenchContext, o: Options): Promise<ScenarioResult> {
  const name = 'scale-out';
  const { services } = ctx;
  if (services.dbKind !== 'postgres') {
    // PGlite lives inside one process: several peekd processes cannot share it.
    return {
      scenario: name,
      rows: [{ scenario: name, metric: 'room commands/s with one rooms process against two', value: 'skipped: needs DATABASE_URL (Postgres)', ceiling: '—', goal: '—' }],
      cores: coresReport(undefined, undefined),
      details: { skipped: 'no Postgres' },
      notes: ['scale-out: skipped — several peekd processes must share one database; set DATABASE_URL to a Postgres.'],
    };
  }

  const prefix = `${uniqueName('bench')}_`;
  const naming = new Naming(prefix, SHARDS);
  const serverName = `${uniqueName('hs')}.bench`;
  const dataDir = services.tempDir('scale-out-');
  const children: Child[] = [];
  let db: TempDatabase | undefined;
  const notes: string[] = [];
  try {
    db = await services.database();
    const dbName = new URL(db.url!).pathname.slice(1);
    const baseEnv: Record<string, string> = {
      // All processes share the data dir: the first one creates the signing key, the others load it.
      ...benchPeekdEnv({ serverName, dataDir, natsUrl: services.natsUrl, prefix, shards: SHARDS }),
      DATABASE_URL: db.url!,
    };
    const peekdEnv = async (roles: string) => ({ ...baseEnv, SCALEOUT_MODE: 'peekd', PEEKD_ROLES: roles, PEEKD_LISTEN: `127.0.0.1:${await freePort()}` });

    // Started one after another: the first runs the migrations and creates the streams and the key.
    log(`${name}: starting the projections,federation process`);
    const projections = await startWorker('projections', await peekdEnv('projections,federation'), children);
    log(`${name}: starting rooms process #1`);
    const rooms1 = await startWorker('rooms1', await peekdEnv('rooms'), children);
    const load = await startWorker('load', { ...baseEnv, SCALEOUT_MODE: 'load' }, children);

    const roomHosts = [rooms1];
    /** Waits until the room hosts hold every shard between them, each its share; returns the split and how long it took. */
    const waitForLeases = async (hosts: Child[], timeoutMs = 120_000) => {
      const t0 = Date.now();
      const share = Math.ceil(SHARDS / hosts.length);
      for (;;) {
        const held = await Promise.all(hosts.map((h) => h.call<number[]>('shards')));
        const union = new Set(held.flat());
        const overlap = held.flat().length - union.size;
        if (union.size === SHARDS && overlap === 0 && held.every((s) => s.length === share)) return { split: held.map((s) => s.length), ms: Date.now() - t0 };
        if (Date.now() - t0 > timeoutMs) throw new Error(`${name}: leases not settled within ${timeoutMs} ms (held: ${held.map((s) => s.length).join(' + ')}, ${union.size} distinct)`);
        await sleep(100);
      }
    };
    const first = await waitForLeases(roomHosts);
    log(`${name}: rooms process #1 holds all ${SHARDS} shards (${first.ms} ms after it was ready)`);

    log(`${name}: creating ${o.rooms} world_readable rooms through the NATS command bus`);
    const t0 = Date.now();
    const rooms = await load.call<string[]>('createRooms', { count: o.rooms, serverName, concurrency: 128 }, 900_000);
    const setupMs = Date.now() - t0;
    await projections.call('settle', {}, 600_000);
    log(`${name}: ${o.rooms} rooms in ${setupMs} ms (projections settled after ${Date.now() - t0} ms)`);

    const cycle = (durationMs: number, coverAll = false) => load.call<CycleResult>('cycle', { rooms, serverName, concurrency: o.concurrency, durationMs, coverAll }, durationMs + 600_000);
    /** JetStream consumers on this run's PEEKS and ROOMS streams (the projections' own, plus any left by log reads). */
    const consumerCount = async () => {
      const jsm = await jetstreamManager(services.nc);
      let n = 0;
      for (const kind of ['peeks', 'rooms'] as const) n += (await jsm.streams.info(naming.streamName(kind))).state.consumer_count;
      return n;
    };

    const measure = async (hosts: Child[]): Promise<RunResult> => {
      const n = hosts.length;
      log(`${name}: ${n} rooms process(es): warm-up, ${o.warmupMs / 1000} s and at least one command on every room`);
      const wu0 = Date.now();
      await cycle(o.warmupMs, true);
      const warmupMs = Date.now() - wu0;
      await projections.call('settle', {}, 600_000);
      const shards = (await Promise.all(hosts.map((h) => h.call<number[]>('shards')))).map((s) => s.length);
      log(`${name}: ${n} rooms process(es) (shards ${shards.join(' + ')}): ${o.measureMs / 1000} s of peek/renew/unpeek, ${o.concurrency} in flight`);
      const roles: Record<string, number> = { projections: projections.pid, 'load generator': load.pid, bench: process.pid };
      hosts.forEach((h, i) => (roles[`rooms #${i + 1}`] = h.pid));
      const c0 = cpuSample();
      const w0 = Date.now();
      const firmSamples: number[][] = [];
      const firmTimer = setInterval(() => {
        void Promise.all(hosts.map((h) => h.call<number>('firm', {}, 5_000))).then(
          (f) => firmSamples.push(f),
          () => undefined,
        );
      }, 500);
      const result = await cycle(o.measureMs).finally(() => clearInterval(firmTimer));
      const firm = hosts.map((_, i) => (firmSamples.length === 0 ? NaN : Math.min(...firmSamples.map((f) => f[i]!))));
      const { cores: cpu, others } = attributeCpu(c0, cpuSample(), roles, (Date.now() - w0) / 1000, dbName);
      const consumers = await consumerCount().catch(() => NaN);
      log(
        `${name}: ${n} rooms process(es): ${fmtNum(result.perSecond)} commands/s, p50 ${fmtNum(result.latency.p50)} ms, p99 ${fmtNum(result.latency.p99)} ms; ${result.errors} errors, ${result.retries} retries; CPU ${JSON.stringify(cpu)}; fewest shards held ${firm.join(' + ')}; JetStream consumers on PEEKS+ROOMS after it ${consumers}`,
      );
      // Let the projections catch up so the next run does not pay for this one's backlog.
      await projections.call('settle', {}, 600_000);
      return { processes: n, cycle: result, cpu, others, shards, firm, warmupMs, consumers };
    };

    const one = await measure(roomHosts);

    log(`${name}: starting rooms process #2 and waiting for the leases to rebalance`);
    const r0 = Date.now();
    const rooms2 = await startWorker('rooms2', await peekdEnv('rooms'), children);
    const ready2Ms = Date.now() - r0;
    roomHosts.push(rooms2);
    const second = await waitForLeases(roomHosts);
    log(`${name}: leases rebalanced to ${second.split.join(' + ')} ${second.ms} ms after rooms process #2 was ready (it took ${ready2Ms} ms to start)`);
    const baselineConsumers = await consumerCount().catch(() => NaN);
    const two = await measure(roomHosts);

    // Back to one: a clean stop of #2 hands its leases back at once. The same run again
    // shows how much the machine (shared with whatever else runs) drifted meanwhile.
    log(`${name}: stopping rooms process #2; measuring one rooms process again`);
    const s0 = Date.now();
    await rooms2.stop(60_000);
    roomHosts.pop();
    const back = await waitForLeases(roomHosts);
    const backMs = Date.now() - s0;
    const again = await measure(roomHosts);

    const ratio = two.cycle.perSecond / one.cycle.perSecond;
    const machineCores = coresReport(undefined, undefined).machine;
    const cpuLine = (r: RunResult) =>
      Object.entries(r.cpu)
        .filter(([, v]) => v > 0)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
    const roomsCores = (r: RunResult) => Array.from({ length: r.processes }, (_, i) => r.cpu[`rooms #${i + 1}`] ?? 0);
    const perCore = (r: RunResult) => {
      const cores = roomsCores(r);
      const total = cores.reduce((a, b) => a + b, 0);
      return { cores, total, perCore: total > 0 ? r.cycle.perSecond / total : NaN };
    };
    const p1 = perCore(one);
    const p2 = perCore(two);
    for (const [label, r] of [
      ['1-rooms-process run', one],
      ['2-rooms-process run', two],
      ['1-rooms-process run again (after #2 stopped)', again],
    ] as const) {
      notes.push(
        `${name}: CPU busy during the ${label} (shards ${r.shards.join(' + ')}; ${fmtNum(r.cycle.perSecond)} commands/s; warm-up ${round(r.warmupMs / 1000, 1)} s; ${r.consumers} JetStream consumers on PEEKS+ROOMS after it), in cores (of ${machineCores}): ${cpuLine(r)}.` +
          (r.others.length > 0 ? ` Busiest processes not of this run: ${r.others.join('; ')}.` : ''),
      );
      if (r.cycle.errors > 0 || r.cycle.retries > 0)
        notes.push(`${name}: ${r.processes} rooms process(es): ${r.cycle.errors} commands failed (last: ${r.cycle.lastError ?? 'n/a'}), ${r.cycle.retries} retried.`);
    }
    notes.push(
      `${name}: commands/s per busy core of a rooms process: 1 process ${fmtNum(one.cycle.perSecond)}/s ÷ ${round(p1.total, 2)} cores = ${fmtNum(p1.perCore)}; ` +
        `2 processes ${fmtNum(two.cycle.perSecond)}/s ÷ ${round(p2.total, 2)} cores (${p2.cores.map((c) => round(c, 2)).join(' + ')}) = ${fmtNum(p2.perCore)}. ` +
        `Every process (rooms, projections, load, nats-server, Postgres) shares the ${machineCores}, so the 2-vs-1 ratio is bounded by the machine, not by the leases.`,
    );
    const drift = again.cycle.perSecond / one.cycle.perSecond - 1;
    if (two.consumers > baselineConsumers || again.consumers > baselineConsumers) {
      notes.push(
        `${name}: JetStream consumers left behind after shards change owner: ${one.consumers} on PEEKS+ROOMS after the first run, ${two.consumers} after the 2-process run, ${again.consumers} after the last. ` +
          `Each room an actor loads from the log after a handover is read through an ordered consumer (src/nats/eventLog.ts readWithConsumer) that is closed but not deleted; @nats-io/jetstream gives those a 5-minute inactive threshold. ` +
          `Every warm-up sends a command to each room before measuring, so those loads happen before the measured window (see nats-server's CPU per run for what the leftovers cost).`,
      );
    }
    notes.push(
      `${name}: one rooms process again after #2 stopped: ${fmtNum(again.cycle.perSecond)} commands/s (${drift >= 0 ? '+' : ''}${(drift * 100).toFixed(1)}% vs the first run; p50 / p99 ${fmtNum(again.cycle.latency.p50)} / ${fmtNum(again.cycle.latency.p99)} ms)` +
        `; 2 processes against the mean of the two one-process runs that bracket it: ${(two.cycle.perSecond / ((one.cycle.perSecond + again.cycle.perSecond) / 2)).toFixed(2)}` +
        (Math.abs(drift) > 0.1 ? ' — **the machine drifted by more than 10% between runs: treat the ratio with care**.' : '.'),
    );
    notes.push(
      `${name}: leases — rooms process #1 held all ${SHARDS} shards ${first.ms} ms after it was ready; with #2 started (${ready2Ms} ms to start), they split ${second.split.join(' + ')} ${second.ms} ms after it was ready; after #2 stopped, #1 held all ${SHARDS} again ${backMs} ms after the stop began. ${fmtNum(o.rooms)} rooms, ${o.concurrency} commands in flight, warm-up of at least ${o.warmupMs / 1000} s and one command per room, ${o.measureMs / 1000} s measured per run.`,
    );

    const rows: Row[] = [
      { scenario: name, metric: 'room commands/s through NATS request/reply, 1 rooms process', value: fmtNum(one.cycle.perSecond), ceiling: '—', goal: '—' },
      { scenario: name, metric: 'room commands/s through NATS request/reply, 2 rooms processes', value: fmtNum(two.cycle.perSecond), ceiling: '—', ratio: round(ratio, 2), goal: '—' },
      { scenario: name, metric: 'latency p50 / p99, ms, 1 rooms process', value: `${fmtNum(one.cycle.latency.p50)} / ${fmtNum(one.cycle.latency.p99)}`, ceiling: '—', goal: '—' },
      { scenario: name, metric: 'latency p50 / p99, ms, 2 rooms processes', value: `${fmtNum(two.cycle.latency.p50)} / ${fmtNum(two.cycle.latency.p99)}`, ceiling: '—', goal: '—' },
    ];
    return {
      scenario: name,
      rows,
      cores: coresReport(rooms1.pid, load.pid, { server: 'rooms #1', load: 'load generator' }),
      details: {
        options: o,
        shards: SHARDS,
        setupMs,
        leases: { firstMs: first.ms, rebalanceMs: second.ms, secondStartMs: ready2Ms, split: second.split, backMs, back: back.split },
        one,
        two,
        again,
        drift,
        ratio,
        perCore: { one: p1, two: p2 },
      },
      notes,
    };
  } finally {
    // Room hosts first (they hand their leases back), then the rest; then the streams, KV and database.
    for (const c of [...children].reverse()) await c.stop(60_000).catch((err) => log(`${name}: stopping ${c.name} failed:`, String(err)));
    await deleteStreams(services.nc, naming).catch((err) => log(`${name}: deleteStreams failed:`, String(err)));
    await db?.drop().catch((err) => log(`${name}: drop database failed:`, String(err)));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export const scaleOut: Scenario = {
  name: 'scale-out',
  summary: 'room commands/s through NATS request/reply with the roles split: one rooms process against two',
  run: (ctx) =>
    runScaleOut(ctx, {
      rooms: ctx.quick ? 500 : 2000,
      concurrency: 64,
      warmupMs: ctx.quick ? 1000 : 2000,
      measureMs: ctx.quick ? 3000 : 8000,
    }),
};
