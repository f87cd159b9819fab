// The "many rooms" and "one hot room" scenarios: peek / renew / unpeek commands through
// peekd's HTTP API (autocannon in the load-generator process), against raw JetStream
// publishes with the expected last subject sequence at the same concurrency and payload size.
import { encodePeekEvent } from '../src/events/peekEvents.ts';
import {
  coresReport,
  cpuBetween,
  cpuSample,
  fmtNum,
  log,
  logPath,
  pin,
  profilePath,
  round,
  schedBetween,
  schedSample,
  startLoadChild,
  startPeekdChild,
  uniqueName,
  type Row,
  type ScenarioResult,
} from './harness.ts';
import { Child } from './ipc.ts';
import { describeProfile, profiled } from './profile.ts';
import { profiles, type BenchContext, type Scenario } from './scenario.ts';
import { describeTrace, type TraceLine } from './trace.ts';

export interface CycleResult {
  seconds: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  total: number;
  perSecond: number;
  latency: { p50: number; p90: number; p99: number; mean: number; max: number };
  statusCodes: Record<string, number>;
}

interface RawResult {
  publishes: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
}

interface Options {
  name: string;
  rooms: number;
  connections: number;
  durationS: number;
  rawMs: number;
  goal: number;
  /** Latency goal under this load (p99, ms), if any. */
  p99GoalMs?: number;
}

/** One peek / renew / unpeek load from the load generator (autocannon) against `url`, for `durationS`. */
export function peekCycle(load: Child, a: { url: string; rooms: string[]; tokens: string[]; connections: number; durationS: number }): Promise<CycleResult> {
  return load.call<CycleResult>('peekCycle', a, a.durationS * 1000 + 120_000);
}

async function runCommands(ctx: BenchContext, o: Options): Promise<ScenarioResult> {
  const { services } = ctx;
  const server = await startPeekdChild(services, { label: o.name });
  const load = await startLoadChild(services, o.name);
  const notes: string[] = [];
  try {
    const creator = `@bench:${server.serverName}`;
    log(`${o.name}: creating ${o.rooms} world_readable rooms`);
    const t0 = Date.now();
    const rooms = await server.child.call<string[]>('createRooms', { count: o.rooms, creator, concurrency: 128 }, 900_000);
    const setupMs = Date.now() - t0;
    log(`${o.name}: ${o.rooms} rooms in ${setupMs} ms; registering ${o.connections} devices`);
    const users = await load.call<{ userId: string; deviceId: string; token: string }[]>('register', { url: server.url, count: o.connections, prefix: 'c' });
    const tokens = users.map((u) => u.token);
    const cycle = (durationS: number) => peekCycle(load, { url: server.url, rooms, tokens, connections: o.connections, durationS });

    log(`${o.name}: warm-up`);
    await cycle(2);
    await server.child.call('settle');
    log(`${o.name}: ${o.durationS} s of peek/renew/unpeek over HTTP, ${o.connections} connection(s)`);
    const c0 = cpuSample();
    const s0 = schedSample(server.child.pid);
    const w0 = Date.now();
    const http = await cycle(o.durationS);
    const wall = (Date.now() - w0) / 1000;
    const cpu = cpuBetween(c0, cpuSample(), { peekd: server.child.pid, loadgen: load.pid, bench: process.pid }, wall);
    const mainThread = schedBetween(s0, schedSample(server.child.pid), wall);
    await server.child.call('settle');

    let busOnly: { commands: number; perSecond: number } | undefined;
    if (o.rooms === 1) {
      // The actor alone (command bus, no HTTP, no wait for the projections): for the breakdown.
      busOnly = await server.child.call<{ commands: number; perSecond: number }>('busLoop', { roomId: rooms[0], userId: users[0]!.userId, deviceId: `${users[0]!.deviceId}_bus`, durationMs: 3000 });
    }

    const payloadBytes = encodePeekEvent({
      type: 'PeekStarted',
      v: 1,
      roomId: rooms[0]!,
      peek: { kind: 'device', userId: users[0]!.userId, deviceId: users[0]!.deviceId },
      at: Date.now(),
      expiresAt: Date.now() + 3_600_000,
      roomSeq: o.rooms * 3,
    }).length;
    log(`${o.name}: ceiling — raw JetStream publishes (expected last subject sequence, ${o.connections} in flight, ${payloadBytes} B)`);
    const raw = await load.call<RawResult>('rawPublish', { natsUrl: services.natsUrl, prefix: `${uniqueName('raw')}_`, rooms, concurrency: o.connections, payloadBytes, durationMs: o.rawMs });
    const ratio = http.perSecond / raw.perSecond;
    const met = ratio >= o.goal;
    log(`${o.name}: peekd ${fmtNum(http.perSecond)}/s vs raw ${fmtNum(raw.perSecond)}/s = ${ratio.toFixed(3)}`);

    const floor = await httpFloor(ctx, load, o, rooms, tokens, services.natsUrl, payloadBytes);
    const peekdUs = ((cpu.peekd ?? 0) * http.seconds * 1e6) / Math.max(1, http.ok);
    notes.push(
      `${o.name}: the HTTP floor (the same requests from the same load generator, answered by bench/rawhttp.ts with a small JSON body and nothing else): a bare node:http server ${fmtNum(floor.bare.perSecond)}/s at ${fmtNum(floor.bare.cpuUs)} µs of CPU per request; Fastify with peekd's plugins and hooks on these routes (CORS, rate limit, request ID) ${fmtNum(floor.fastify.perSecond)}/s at ${fmtNum(floor.fastify.cpuUs)} µs; peekd ${fmtNum(peekdUs)} µs per command (its whole process: HTTP, auth, actor, append, projections), so HTTP with Fastify is ${Math.round((100 * floor.fastify.cpuUs) / peekdUs)} % of it.`,
      `${o.name}: the append floor (the bare node:http server appending each request to JetStream with the expected last subject sequence, one append at a time per room, and answering after the ack; nothing else): ${fmtNum(floor.appending.perSecond)}/s at ${fmtNum(floor.appending.cpuUs)} µs of CPU per request${floor.appending.failed > 0 ? ` (${floor.appending.failed} failed)` : ''}, ${(floor.appending.perSecond / raw.perSecond).toFixed(2)} of the raw ceiling: the most a server that writes every command to the log reaches on this machine under this load. peekd reached ${(http.perSecond / floor.appending.perSecond).toFixed(2)} of it.`,
    );
    if (http.non2xx > 0 || http.errors > 0) notes.push(`${o.name}: ${http.non2xx} non-2xx answers (${JSON.stringify(http.statusCodes)}) and ${http.errors} errors out of ${http.total} requests.`);
    notes.push(
      `${o.name}: CPU busy during the HTTP run, in cores (of ${coresReport(undefined, undefined).machine}): ${Object.entries(cpu)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
    );
    if (mainThread) {
      notes.push(
        `${o.name}: peekd's main thread (its event loop) during the HTTP run: on a core ${mainThread.onCpu} of the time, runnable but waiting in the run queue for a core ${mainThread.waiting}, idle (waiting for I/O or a timer) ${mainThread.idle} (/proc schedstat). ${mainThread.idle < 0.05 ? 'It was never short of work: what held it back was CPU, its own and that of the processes it shares the cores with.' : 'It waited on I/O part of the time.'}`,
      );
    }
    if (busOnly) notes.push(`${o.name}: the room actor alone (command bus in peekd's process, no HTTP, no wait for projections) runs ${fmtNum(busOnly.perSecond)} commands/s sequentially.`);

    let profile;
    let trace: TraceLine[] | undefined;
    if (profiles(ctx, !met)) {
      log(`${o.name}: ${met ? 'profiling' : 'goal missed — profiling'} peekd for 5 s of the same load`);
      await server.child.call('traceStart');
      const p = await profiled(server.child, profilePath(o.name), () => cycle(5));
      trace = await server.child.call<TraceLine[]>('traceStop');
      profile = p.summary;
      notes.push(describeProfile(`${o.name} (peekd process)`, p.summary));
      notes.push(
        describeTrace(`${o.name} (peekd process, same 5 s; HTTP latency there p50 ${fmtNum(p.result.latency.p50)} ms, mean ${fmtNum(p.result.latency.mean)} ms)`, trace, p.result.ok, 'command', 24),
      );
    }

    // No regressions: the read models the load left behind equal a rebuild from the log.
    const verified = await server.child.call<{ projection: string; equal: boolean }[]>('verify', {}, 600_000);
    const unequal = verified.filter((v) => !v.equal).map((v) => v.projection);
    notes.push(
      `${o.name}: peekd verify after the load: ${unequal.length === 0 ? `clean (${verified.map((v) => v.projection).join(', ')} equal to a rebuild from the log)` : `**differs** in ${unequal.join(', ')}`}.`,
    );
    if (unequal.length > 0) throw new Error(`${o.name}: verify after the load found differences in ${unequal.join(', ')}`);

    const rows: Row[] = [
      {
        scenario: o.name,
        metric: o.rooms === 1 ? 'sequential peek/renew/unpeek on one room, commands/s (HTTP)' : `peek/renew/unpeek across ${fmtNum(o.rooms)} rooms, commands/s (HTTP, ${o.connections} conns)`,
        value: fmtNum(http.perSecond),
        ceiling: `${fmtNum(raw.perSecond)} raw expected-seq publishes/s`,
        ratio: round(ratio, 3),
        goal: `ratio ≥ ${o.goal}`,
        met,
      },
      {
        scenario: o.name,
        metric: 'latency p50 / p99, ms',
        value: `${fmtNum(http.latency.p50)} / ${fmtNum(http.latency.p99)}`,
        ceiling: `${fmtNum(raw.p50)} / ${fmtNum(raw.p99)} per raw publish`,
        goal: o.p99GoalMs === undefined ? '—' : `p99 ≤ ${o.p99GoalMs} ms`,
        ...(o.p99GoalMs === undefined ? {} : { met: http.latency.p99 <= o.p99GoalMs }),
      },
    ];
    return {
      scenario: o.name,
      rows,
      cores: coresReport(server.child.pid, load.pid),
      details: { options: o, setupMs, http, raw, payloadBytes, cpuCoresBusy: cpu, peekdMainThread: mainThread, peekdCpuUsPerCommand: round(peekdUs, 1), httpFloor: floor, busOnly, profile, trace },
      notes,
    };
  } finally {
    await load.stop();
    await server.stop();
  }
}

interface FloorRun {
  perSecond: number;
  /** The floor server's CPU (user + system) per request, µs. */
  cpuUs: number;
  /** Answers other than 2xx, and connection errors (the appending server answers 500 when an append fails). */
  failed: number;
}

interface Floor {
  bare: FloorRun;
  fastify: FloorRun;
  /** The bare server appending each request to JetStream before it answers. */
  appending: FloorRun;
}

/**
 * The same peek / renew / unpeek load against bench/rawhttp.ts: a bare node:http server,
 * Fastify with peekd's plugins, and the bare server appending each request to the log.
 */
async function httpFloor(ctx: BenchContext, load: Child, o: Options, rooms: string[], tokens: string[], natsUrl: string, payloadBytes: number): Promise<Floor> {
  const server = await Child.start({ module: 'rawhttp', logFile: logPath(`${o.name}-rawhttp`) });
  pin(server.pid, '0');
  try {
    const urls = await server.call<{ bare: string; fastify: string; appending: string }>('listen', { natsUrl, prefix: `${uniqueName('floor')}_`, payloadBytes });
    const run = async (url: string): Promise<FloorRun> => {
      const cycle = (durationS: number) => peekCycle(load, { url, rooms, tokens, connections: o.connections, durationS });
      await cycle(ctx.quick ? 1 : 2);
      const before = await server.call<number>('cpu');
      const r = await cycle(ctx.quick ? 2 : 5);
      const used = (await server.call<number>('cpu')) - before;
      return { perSecond: round(r.perSecond, 0), cpuUs: round(used / Math.max(1, r.ok), 1), failed: r.non2xx + r.errors };
    };
    log(`${o.name}: HTTP floor — the same requests to a bare node:http server, to Fastify with peekd's plugins, and to the bare server appending each to JetStream`);
    // The appending server's streams go when the child exits (server.stop below).
    return { bare: await run(urls.bare), fastify: await run(urls.fastify), appending: await run(urls.appending) };
  } finally {
    await server.stop();
  }
}

export const manyRooms: Scenario = {
  name: 'many-rooms',
  summary: 'peek/renew/unpeek commands per second through HTTP across 10,000 rooms vs raw expected-sequence JetStream publishes',
  run: (ctx) => runCommands(ctx, { name: 'many-rooms', rooms: ctx.quick ? 1000 : 10_000, connections: 64, durationS: ctx.quick ? 5 : 10, rawMs: ctx.quick ? 3000 : 6000, goal: 0.25, p99GoalMs: 50 }),
};

export const hotRoom: Scenario = {
  name: 'hot-room',
  summary: 'sequential commands per second on one room vs raw sequential expected-sequence publishes on one subject',
  run: (ctx) => runCommands(ctx, { name: 'hot-room', rooms: 1, connections: 1, durationS: ctx.quick ? 5 : 10, rawMs: ctx.quick ? 3000 : 5000, goal: 0.3 }),
};
