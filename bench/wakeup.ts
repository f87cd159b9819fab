// The "wake-up" scenario: N devices long-poll /sync on a room they peek; one new event
// is appended; how long until every device has its /sync response? Measured at 1,000 and
// 10,000 waiting devices, from the moment JetStream acknowledged the append (peekd's
// process) to each response's last byte (the load generator's process), on the
// machine-wide monotonic clock both share. The ceiling, measured in the same run once peekd
// has stopped: the same load generator long-polling the most direct node:http server
// (bench/rawpoll.ts), which answers every waiting request with prepared bytes at once.
import { readFileSync } from 'node:fs';
import {
  appendPeeksToLog,
  coresReport,
  cpuBetween,
  cpuSample,
  fmtNum,
  log,
  logPath,
  percentile,
  pin,
  profilePath,
  sleep,
  startLoadChild,
  startPeekdChild,
  until,
  type Row,
  type ScenarioResult,
  type Services,
} from './harness.ts';
import { Child } from './ipc.ts';
import { describeProfile, profiled, type ProfileSummary } from './profile.ts';
import { profiles, type Scenario } from './scenario.ts';
import { describeTrace, type TraceLine } from './trace.ts';

interface Timed {
  tStart: string;
  tAck: string;
  tProjected: string;
  seq: number;
}

function openFilesLimit(): number {
  try {
    const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

export const wakeUp: Scenario = {
  name: 'wake-up',
  summary: 'time from a new event’s append to the /sync response of every long-polling peeking device, at 1,000 and 10,000 devices',
  async run(ctx): Promise<ScenarioResult> {
    const { services } = ctx;
    let sizes = ctx.quick ? [100, 1000] : [1000, 10_000];
    const limit = openFilesLimit();
    if (limit < sizes.at(-1)! + 2000) {
      const fit = Math.max(100, limit - 2000);
      log(`wake-up: the open-files limit is ${limit}; measuring up to ${fit} devices (raise it with ulimit -n to measure ${sizes.at(-1)})`);
      sizes = sizes.map((s) => Math.min(s, fit));
    }
    const n = sizes.at(-1)!;
    const server = await startPeekdChild(services, { label: 'wake-up' });
    const load = await startLoadChild(services, 'wake-up');
    const notes: string[] = [];
    let result: ScenarioResult;
    let template: string | null;
    /** Per row: its number of devices and peekd's p99 (the ceiling's ratio is taken against it). */
    const measured: { size: number; p99: number }[] = [];
    try {
      const creator = `@bench:${server.serverName}`;
      const [room] = await server.child.call<string[]>('createRooms', { count: 1, creator });
      log(`wake-up: ${n} users with one device each`);
      const users = await server.child.call<{ userId: string; deviceId: string; token: string }[]>('createSessions', { count: n, prefix: 'w', concurrency: 32 }, 900_000);
      log(`wake-up: ${n} live device peeks on one room (appended straight to the log)`);
      const t0 = Date.now();
      await server.child.call('passivateAll');
      const direct = await appendPeeksToLog(services, server.naming, [{ roomId: room!, peeks: users.map((u) => ({ userId: u.userId, deviceId: u.deviceId })) }]);
      await server.child.call('settle', {}, 900_000);
      const a0 = Date.now();
      await server.child.call('activate', { rooms: [room] }, 900_000);
      const activateMs = Date.now() - a0;
      const peeksMs = Date.now() - t0;
      const live = await server.child.call<number>('livePeeks', { rooms: [room] });
      if (live !== n) throw new Error(`the room's actor holds ${live} live peeks, not ${n}`);
      // One sync gives the positions every device starts from (they are global).
      const fresh = async (token: string) => {
        const body = await load.call<{ next_batch: string; rooms: { peek: Record<string, unknown> } }>('get', { url: server.url, path: '/_matrix/client/v3/sync', token });
        if (!(room! in body.rooms.peek)) throw new Error('an initial sync does not show the peeked room');
        return body.next_batch;
      };
      await load.call('pollInit', { url: server.url, tokens: users.map((u) => u.token), since: await fresh(users[0]!.token), timeoutMs: 280_000 });

      notes.push(`wake-up: rebuilding the room's actor from the log with ${fmtNum(n)} live peeks took ${fmtNum(activateMs)} ms.`);
      const rows: Row[] = [];
      const perSize: Record<string, unknown> = {};
      let armed = 0;
      let profile: ProfileSummary | undefined;
      let trace: TraceLine[] | undefined;
      for (const size of sizes) {
        log(`wake-up: ${size} devices long-polling`);
        // Devices joining now start from the current position, not from the earlier rounds.
        await load.call('pollSince', { from: armed, to: size, since: await fresh(users[armed]!.token) });
        for (let from = armed; from < size; from += 500) {
          const to = Math.min(size, from + 500);
          await load.call('pollArm', { from, to });
          await until(`${to} waiting`, async () => (await server.child.call<number>('waiting')) >= to, 120_000, 20);
        }
        armed = size;
        // At the largest size one clean round, then (goal missed) one more under the profiler.
        const rounds = size === n && !ctx.quick ? 1 : 3;
        const fromAck: number[] = [];
        const fromStart: number[] = [];
        const roundsOut: Record<string, unknown>[] = [];
        for (let r = 0; r < rounds; r++) {
          await until(`${size} waiting again`, async () => (await server.child.call<number>('waiting')) >= size, 280_000, 20);
          await sleep(200);
          // Newly armed devices first catch up on the events of earlier rounds: forget those.
          await load.call('pollTake', { from: 0, to: size });
          const c0 = cpuSample();
          const w0 = Date.now();
          await server.child.call('loopStart');
          const ev = await server.child.call<Timed>('appendTimed', { roomId: room, sender: creator });
          await until(`${size} responses`, async () => (await load.call<{ withArrival: number }>('pollState')).withArrival >= size, 280_000, 10);
          const { finishes, ...loop } = await server.child.call<{ p50Ms: number; p99Ms: number; maxMs: number; meanMs: number; cpuSeconds: number; finishes: string[] }>('loopStop');
          const cpu = cpuBetween(c0, cpuSample(), { peekd: server.child.pid, loadgen: load.pid, bench: process.pid }, (Date.now() - w0) / 1000);
          const arrivals = await load.call<(string | null)[]>('pollTake', { from: 0, to: size });
          const ack = BigInt(ev.tAck);
          const start = BigInt(ev.tStart);
          const lat = arrivals.filter((a): a is string => a !== null).map((a) => Number(BigInt(a) - ack) / 1e6);
          // When peekd ended the woken responses (the first `size` /sync answers after the append).
          const sent = finishes
            .map((f) => Number(BigInt(f) - ack) / 1e6)
            .filter((x) => x >= 0)
            .sort((a, b) => a - b)
            .slice(0, size);
          fromAck.push(...lat);
          fromStart.push(...arrivals.filter((a): a is string => a !== null).map((a) => Number(BigInt(a) - start) / 1e6));
          const state = await load.call<{ errors: number; lastError: string }>('pollState');
          roundsOut.push({
            appendMs: Number(ack - start) / 1e6,
            projectedMs: Number(BigInt(ev.tProjected) - ack) / 1e6,
            p50: percentile(lat, 50),
            p99: percentile(lat, 99),
            max: Math.max(...lat),
            responses: lat.length,
            cpuCoresBusy: cpu,
            eventLoopDelay: loop,
            serverSentMs: { first: sent[0], p50: percentile(sent, 50), p99: percentile(sent, 99), max: sent.at(-1) },
            pollErrors: state.errors,
          });
          log(`wake-up: ${size} devices, round ${r + 1}: p50 ${fmtNum(percentile(lat, 50))} ms, p99 ${fmtNum(percentile(lat, 99))} ms, last ${fmtNum(Math.max(...lat))} ms`);
        }
        const p99 = percentile(fromAck, 99);
        // p99 ≤ 50 ms at 1,000 devices, ≤ 200 ms at 10,000 (or at the most that fit).
        const limit = size === 1_000 ? 50 : size >= 10_000 || size === n ? 200 : undefined;
        const goal = limit !== undefined;
        const sentAll = roundsOut.map((r) => (r.serverSentMs as { p99: number }).p99).filter((x) => Number.isFinite(x));
        const serverP99 = Math.max(...sentAll);
        perSize[String(size)] = { rounds: roundsOut, p50: percentile(fromAck, 50), p99, max: Math.max(...fromAck), p99FromCommand: percentile(fromStart, 99), serverSentP99: serverP99 };
        measured.push({ size, p99 });
        rows.push({
          scenario: 'wake-up',
          metric: `append → /sync response at the client, ${fmtNum(size)} waiting devices, p50 / p99 / max ms (in brackets: p99 of peekd ending the responses)`,
          value: `${fmtNum(percentile(fromAck, 50))} / ${fmtNum(p99)} / ${fmtNum(Math.max(...fromAck))} (${fmtNum(serverP99)})`,
          ceiling: '—',
          goal: goal ? `p99 ≤ ${limit} ms at ${fmtNum(size)}` : '—',
          ...(goal ? { met: p99 <= limit } : {}),
        });
        const first = roundsOut[0] as { projectedMs: number; cpuCoresBusy: Record<string, number>; eventLoopDelay: { p99Ms: number; maxMs: number } };
        notes.push(
          `wake-up ${size}: peekd's own wait for the sync projection returned ${fmtNum(first.projectedMs)} ms after the append (it resumes behind the woken requests); ` +
            `peekd's event loop was late by up to ${fmtNum(first.eventLoopDelay.maxMs)} ms (p99 ${fmtNum(first.eventLoopDelay.p99Ms)} ms); CPU busy in cores until the last response: ${Object.entries(
              first.cpuCoresBusy,
            )
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}.`,
        );
        if ((size >= 10_000 || size === n) && profiles(ctx, p99 > limit!)) {
          log(`wake-up: ${p99 > limit! ? 'goal missed — ' : ''}profiling peekd through one more wake-up of ${size} devices`);
          await until(`${size} waiting again`, async () => (await server.child.call<number>('waiting')) >= size, 280_000, 20);
          await sleep(200);
          await load.call('pollTake', { from: 0, to: size });
          await server.child.call('traceStart');
          const p = await profiled(server.child, profilePath('wake-up'), async () => {
            const ev = await server.child.call<Timed>('appendTimed', { roomId: room, sender: creator });
            await until(`${size} responses`, async () => (await load.call<{ withArrival: number }>('pollState')).withArrival >= size, 280_000, 10);
            const arrivals = await load.call<(string | null)[]>('pollTake', { from: 0, to: size });
            const lat = arrivals.filter((a): a is string => a !== null).map((a) => Number(BigInt(a) - BigInt(ev.tAck)) / 1e6);
            (perSize[String(size)] as Record<string, unknown>).profiledRound = { p50: percentile(lat, 50), p99: percentile(lat, 99), max: Math.max(...lat) };
          });
          trace = await server.child.call<TraceLine[]>('traceStop');
          profile = p.summary;
          notes.push(describeProfile(`wake-up ${size} (peekd process, from the append to the last response)`, p.summary));
          notes.push(describeTrace(`wake-up ${size} (peekd process, same window)`, trace, size, 'woken device', 16));
        }
      }
      template = await load.call<string | null>('pollSample');
      await load.call('pollStop');
      result = {
        scenario: 'wake-up',
        rows,
        cores: coresReport(server.child.pid, load.pid),
        details: {
          sizes,
          peeksSetupMs: peeksMs,
          direct,
          activateMs,
          perSize,
          profile,
          trace,
          note: 'latency from JetStream’s ack of the append to the last byte of each /sync response; p99FromCommand counts from before the SendEvents command',
        },
        notes,
      };
    } finally {
      await load.stop();
      await server.stop();
    }
    if (!template) throw new Error('wake-up: no woken /sync answer to model the ceiling on');
    const raw = await rawWakeUp(services, sizes, template, ctx.quick);
    result.details.ceiling = raw;
    result.rows.forEach((row, i) => {
      const { size, p99 } = measured[i]!;
      const c = raw[String(size)]!;
      row.ceiling = `${fmtNum(c.p50)} / ${fmtNum(c.p99)} / ${fmtNum(c.max)} with a bare node:http long-poll server`;
      row.ratio = c.p99 / p99;
    });
    return result;
  },
};

/**
 * The same long-polls against bench/rawpoll.ts: the same load generator code in a fresh
 * process, the same devices, rounds and answer bytes (the last /sync answer peekd sent,
 * with the raw server's token). p50 / p99 / max ms from the raw server's hrtime before its
 * first write to each response's head at the client.
 */
async function rawWakeUp(services: Services, sizes: number[], template: string, quick: boolean): Promise<Record<string, { p50: number; p99: number; max: number }>> {
  const server = await Child.start({ module: 'rawpoll', logFile: logPath('wake-up-rawpoll'), nodeFlags: ['--max-old-space-size=8192'] });
  pin(server.pid, '0');
  const load = await startLoadChild(services, 'wake-up-raw');
  const out: Record<string, { p50: number; p99: number; max: number }> = {};
  try {
    const url = await server.call<string>('listen');
    const n = sizes.at(-1)!;
    await load.call('pollInit', { url, tokens: Array.from({ length: n }, (_, i) => `raw${i}`), since: '0', timeoutMs: 280_000 });
    let armed = 0;
    for (const size of sizes) {
      log(`wake-up ceiling: ${size} devices long-polling a bare node:http server`);
      await load.call('pollSince', { from: armed, to: size, since: await server.call<string>('token') });
      for (let from = armed; from < size; from += 500) await load.call('pollArm', { from, to: Math.min(size, from + 500) });
      armed = size;
      const lat: number[] = [];
      const rounds = size === n && !quick ? 1 : 3;
      for (let r = 0; r < rounds; r++) {
        await until(`${size} waiting on the raw server`, async () => (await server.call<number>('waiting')) >= size, 280_000, 20);
        await sleep(200);
        await load.call('pollTake', { from: 0, to: size });
        const tAck = BigInt(await server.call<string>('wake', { template }));
        await until(`${size} raw responses`, async () => (await load.call<{ withArrival: number }>('pollState')).withArrival >= size, 280_000, 10);
        const arrivals = await load.call<(string | null)[]>('pollTake', { from: 0, to: size });
        lat.push(...arrivals.filter((a): a is string => a !== null).map((a) => Number(BigInt(a) - tAck) / 1e6));
      }
      out[String(size)] = { p50: percentile(lat, 50), p99: percentile(lat, 99), max: Math.max(...lat) };
      log(`wake-up ceiling: ${size} devices: p50 ${fmtNum(out[String(size)]!.p50)} ms, p99 ${fmtNum(out[String(size)]!.p99)} ms`);
    }
    await load.call('pollStop');
  } finally {
    await load.stop();
    await server.stop();
  }
  return out;
}
