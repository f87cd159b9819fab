// The "wake-up" scenario: N devices long-poll /sync on a room they peek; one new event
// is appended; how long until every device has its /sync response? Measured at 1,000 and
// 10,000 waiting devices, from the moment JetStream acknowledged the append (peekd's
// process) to each response's last byte (the load generator's process), on the
// machine-wide monotonic clock both share.
import { readFileSync } from 'node:fs';
import {
  coresReport,
  cpuBetween,
  cpuSample,
  fmtNum,
  log,
  percentile,
  profilePath,
  sleep,
  startLoadChild,
  startPeekdChild,
  until,
  type Row,
  type ScenarioResult,
} from './harness';
import { describeProfile, profiled, type ProfileSummary } from './profile';
import type { Scenario } from './scenario';

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
    try {
      const creator = `@bench:${server.serverName}`;
      const [room] = await server.child.call<string[]>('createRooms', { count: 1, creator });
      log(`wake-up: registering ${n} devices`);
      const users = await load.call<{ userId: string; deviceId: string; token: string }[]>('register', { url: server.url, count: n, prefix: 'w', concurrency: 64 }, 900_000);
      log(`wake-up: ${n} device peeks on one room`);
      const t0 = Date.now();
      await server.child.call('startPeeks', { pairs: users.map((u) => ({ roomId: room, userId: u.userId, deviceId: u.deviceId })), concurrency: 64 }, 900_000);
      const peeksMs = Date.now() - t0;
      // Every device's first /sync gives the same positions: one initial sync is enough.
      const first = await load.call<{ next_batch: string; rooms: { peek: Record<string, unknown> } }>('get', { url: server.url, path: '/_matrix/client/v3/sync', token: users[0]!.token });
      if (!(room! in first.rooms.peek)) throw new Error('the initial sync does not show the peeked room');
      await load.call('pollInit', { url: server.url, tokens: users.map((u) => u.token), since: first.next_batch, timeoutMs: 280_000 });

      const rows: Row[] = [];
      const perSize: Record<string, unknown> = {};
      let armed = 0;
      let profile: ProfileSummary | undefined;
      for (const size of sizes) {
        log(`wake-up: ${size} devices long-polling`);
        for (let from = armed; from < size; from += 500) {
          const to = Math.min(size, from + 500);
          await load.call('pollArm', { from, to });
          await until(`${to} waiting`, async () => (await server.child.call<number>('waiting')) >= to, 120_000, 20);
        }
        armed = size;
        const rounds = size >= 10_000 ? 3 : 5;
        const fromAck: number[] = [];
        const fromStart: number[] = [];
        const roundsOut: Record<string, unknown>[] = [];
        for (let r = 0; r < rounds; r++) {
          await until(`${size} waiting again`, async () => (await server.child.call<number>('waiting')) >= size, 280_000, 20);
          await sleep(200);
          const c0 = cpuSample();
          const w0 = Date.now();
          const ev = await server.child.call<Timed>('appendTimed', { roomId: room, sender: creator });
          await until(`${size} responses`, async () => (await load.call<{ withArrival: number }>('pollState')).withArrival >= size, 280_000, 10);
          const cpu = cpuBetween(c0, cpuSample(), { peekd: server.child.pid, loadgen: load.pid, bench: process.pid }, (Date.now() - w0) / 1000);
          const arrivals = await load.call<(string | null)[]>('pollTake', { from: 0, to: size });
          const ack = BigInt(ev.tAck);
          const start = BigInt(ev.tStart);
          const lat = arrivals.filter((a): a is string => a !== null).map((a) => Number(BigInt(a) - ack) / 1e6);
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
            pollErrors: state.errors,
          });
          log(`wake-up: ${size} devices, round ${r + 1}: p50 ${fmtNum(percentile(lat, 50))} ms, p99 ${fmtNum(percentile(lat, 99))} ms, last ${fmtNum(Math.max(...lat))} ms`);
        }
        const p99 = percentile(fromAck, 99);
        const goal = size >= 10_000 || size === n;
        perSize[String(size)] = { rounds: roundsOut, p50: percentile(fromAck, 50), p99, max: Math.max(...fromAck), p99FromCommand: percentile(fromStart, 99) };
        rows.push({
          scenario: 'wake-up',
          metric: `append → /sync response, ${fmtNum(size)} waiting devices, p50 / p99 / max ms`,
          value: `${fmtNum(percentile(fromAck, 50))} / ${fmtNum(p99)} / ${fmtNum(Math.max(...fromAck))}`,
          ceiling: '—',
          goal: goal ? 'p99 ≤ 50 ms at 10,000' : '—',
          ...(goal ? { met: p99 <= 50 } : {}),
        });
        const first = roundsOut[0] as { projectedMs: number; cpuCoresBusy: Record<string, number> };
        notes.push(
          `wake-up ${size}: the sync projection committed the event ${fmtNum(first.projectedMs)} ms after the append (first round); CPU busy in cores until the last response: ${Object.entries(first.cpuCoresBusy).map(([k, v]) => `${k} ${v}`).join(', ')}.`,
        );
        if (goal && p99 > 50 && ctx.profile) {
          log(`wake-up: goal missed — profiling peekd through one more wake-up of ${size} devices`);
          await until(`${size} waiting again`, async () => (await server.child.call<number>('waiting')) >= size, 280_000, 20);
          const p = await profiled(server.child, profilePath('wake-up'), async () => {
            await server.child.call<Timed>('appendTimed', { roomId: room, sender: creator });
            await until(`${size} responses`, async () => (await load.call<{ withArrival: number }>('pollState')).withArrival >= size, 280_000, 10);
            await load.call('pollTake', { from: 0, to: size });
          });
          profile = p.summary;
          notes.push(describeProfile(`wake-up ${size} (peekd process, from the append to the last response)`, p.summary));
        }
      }
      await load.call('pollStop');
      return {
        scenario: 'wake-up',
        rows,
        cores: coresReport(server.child.pid, load.pid),
        details: { sizes, peeksSetupMs: peeksMs, perSize, profile, note: 'latency from JetStream’s ack of the append to the last byte of each /sync response; p99FromCommand counts from before the SendEvents command' },
        notes,
      };
    } finally {
      await load.stop();
      await server.stop();
    }
  },
};

