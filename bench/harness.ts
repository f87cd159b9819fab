// The bench's shared harness: services (NATS_URL / DATABASE_URL when set, else a
// throwaway nats-server and PGlite), a unique stream prefix and database per peekd,
// the peekd and load-generator child processes, CPU accounting per process, statistics,
// the results table and the JSON files.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats } from '../src/nats/connection.ts';
import { startEmbeddedNats, type EmbeddedNats } from '../src/nats/embeddedServer.ts';
import { deleteStreams } from '../src/nats/streams.ts';
import { Naming } from '../src/events/subjects.ts';
import { jetstream } from '@nats-io/jetstream';
import { encodePeekEvent, type PeekStarted } from '../src/events/peekEvents.ts';
import { EventLog } from '../src/nats/eventLog.ts';
import { Child } from './ipc.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const RESULTS_DIR = join(ROOT, 'bench', 'results');
export const PROFILES_DIR = join(RESULTS_DIR, 'profiles');
export const LOGS_DIR = join(RESULTS_DIR, 'logs');

/** Where a child process's stdout/stderr go (kept after the run; git ignores them). */
export function logPath(name: string): string {
  mkdirSync(LOGS_DIR, { recursive: true });
  const ignore = join(LOGS_DIR, '.gitignore');
  if (!existsSync(ignore)) writeFileSync(ignore, '*\n');
  return join(LOGS_DIR, `${new Date().toISOString().slice(0, 10)}-${name}.log`);
}
export const ADMIN_TOKEN = `bench-${randomBytes(12).toString('hex')}`;

export function log(...parts: unknown[]): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[${t}] ${parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(' ')}\n`);
}

export function uniqueName(prefix = 'b'): string {
  return `${prefix}${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

// --- services ----------------------------------------------------------------------------

export interface TempDatabase {
  /** Postgres URL, or undefined: the process that opens it uses PGlite in its data dir. */
  url?: string;
  drop(): Promise<void>;
}

export class Services {
  private readonly closers: (() => Promise<unknown>)[] = [];
  readonly tmp: string;
  nc!: NatsConnection;

  private constructor(
    readonly natsUrl: string,
    readonly natsKind: 'NATS_URL' | 'throwaway nats-server',
    readonly baseDatabaseUrl: string | undefined,
    tmp: string,
  ) {
    this.tmp = tmp;
  }

  get dbKind(): 'postgres' | 'pglite' {
    return this.baseDatabaseUrl ? 'postgres' : 'pglite';
  }

  static async open(): Promise<Services> {
    const tmp = mkdtempSync(join(tmpdir(), 'peekd-bench-'));
    let embedded: EmbeddedNats | undefined;
    let natsUrl = process.env.NATS_URL ?? '';
    if (!natsUrl) {
      embedded = await startEmbeddedNats({ storeDir: join(tmp, 'nats'), configFile: join(ROOT, 'nats.conf') });
      natsUrl = embedded.url;
    }
    const s = new Services(natsUrl, embedded ? 'throwaway nats-server' : 'NATS_URL', process.env.DATABASE_URL || undefined, tmp);
    if (embedded) s.closers.push(() => embedded!.stop());
    s.closers.push(async () => rmSync(tmp, { recursive: true, force: true }));
    s.nc = await connectNats(natsUrl, 'peekd-bench');
    s.closers.push(() => s.nc.drain());
    return s;
  }

  /** A new empty database (CREATE DATABASE on DATABASE_URL's server), or PGlite. */
  async database(): Promise<TempDatabase> {
    const base = this.baseDatabaseUrl;
    if (!base) return { url: undefined, drop: async () => {} };
    const name = uniqueName('peekd_bench_');
    const { default: postgres } = await import('postgres');
    const admin = postgres(base, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    await admin.end();
    const u = new URL(base);
    u.pathname = `/${name}`;
    return {
      url: u.toString(),
      drop: async () => {
        const a = postgres(base, { max: 1, onnotice: () => {} });
        await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await a.end();
      },
    };
  }

  tempDir(prefix: string): string {
    return mkdtempSync(join(this.tmp, prefix));
  }

  async close(): Promise<void> {
    for (const c of this.closers.reverse()) await c().catch((err) => log('cleanup failed:', String(err)));
  }
}

// --- cores -------------------------------------------------------------------------------

/** The CPUs a process may run on (its affinity), e.g. "0-1" and 2. */
export function affinityOf(pid: number): { list: string; count: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const list = /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1] ?? '?';
    let count = 0;
    for (const part of list.split(',')) {
      const [a, b] = part.split('-').map(Number);
      count += b === undefined ? 1 : b - a! + 1;
    }
    return { list, count };
  } catch {
    return { list: '?', count: availableParallelism() };
  }
}

/** BENCH_PIN=1: the server side gets CPU 0, the load side CPU 1 (all threads). */
export function pin(pid: number, cpuList: string): void {
  if (process.env.BENCH_PIN !== '1') return;
  try {
    execFileSync('taskset', ['-a', '-pc', cpuList, String(pid)], { stdio: 'ignore' });
  } catch (err) {
    log(`could not pin ${pid} to ${cpuList}: ${(err as Error).message}`);
  }
}

export interface CoresReport {
  machine: string;
  server: string;
  load: string;
  note: string;
}

export function coresReport(serverPid: number | undefined, loadPid: number | undefined, labels = { server: 'peekd', load: 'load generator' }): CoresReport {
  const fmt = (pid: number | undefined, what: string) => {
    if (pid === undefined) return 'n/a';
    const a = affinityOf(pid);
    return `${a.count} core${a.count === 1 ? '' : 's'} (cpus ${a.list}, ${what} pid ${pid})`;
  };
  return {
    machine: `${availableParallelism()} cores`,
    server: fmt(serverPid, labels.server),
    load: fmt(loadPid, labels.load),
    note:
      process.env.BENCH_PIN === '1'
        ? 'pinned with taskset (BENCH_PIN=1); nats-server and Postgres float over all cores'
        : 'not pinned: peekd, the load generator, nats-server and Postgres share the cores',
  };
}

// --- CPU accounting over a window -------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

export type CpuSample = Map<number, { comm: string; ticks: number }>;

/** utime+stime of every process (all its threads), from /proc. */
export function cpuSample(): CpuSample {
  const out: CpuSample = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      out.set(Number(name), { comm, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * One thread's time on a core and time runnable but waiting in the run queue for one, in
 * ns (/proc/<pid>/task/<tid>/schedstat); undefined where the kernel does not keep them.
 */
export interface SchedSample {
  onCpuNs: number;
  waitNs: number;
}

/** The schedstat of thread `tid` of `pid` (the main thread by default: its tid is the pid). */
export function schedSample(pid: number, tid = pid): SchedSample | undefined {
  try {
    const [onCpu, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(' ');
    return { onCpuNs: Number(onCpu), waitNs: Number(wait) };
  } catch {
    return undefined;
  }
}

/**
 * Where a thread spent a window, in cores: on one, runnable and waiting for one, and the rest
 * (blocked: waiting for I/O or a timer). A thread that is never idle but waits for a core is
 * held back by the machine's other work, not by what it waits on.
 */
export function schedBetween(a: SchedSample | undefined, b: SchedSample | undefined, wallSeconds: number): { onCpu: number; waiting: number; idle: number } | undefined {
  if (!a || !b || wallSeconds <= 0) return undefined;
  const onCpu = (b.onCpuNs - a.onCpuNs) / 1e9 / wallSeconds;
  const waiting = (b.waitNs - a.waitNs) / 1e9 / wallSeconds;
  return { onCpu: round(onCpu, 2), waiting: round(waiting, 2), idle: round(Math.max(0, 1 - onCpu - waiting), 2) };
}

/** CPU seconds (user + system) one process used between two samples. */
export function cpuSecondsOf(a: CpuSample, b: CpuSample, pid: number): number {
  return ((b.get(pid)?.ticks ?? 0) - (a.get(pid)?.ticks ?? 0)) / CLK_TCK;
}

/** CPU seconds per role between two samples; `roles` names our own pids. */
export function cpuBetween(a: CpuSample, b: CpuSample, roles: Record<string, number | undefined>, wallSeconds: number): Record<string, number> {
  const byPid = new Map<number, string>();
  for (const [role, pid] of Object.entries(roles)) if (pid !== undefined) byPid.set(pid, role);
  const sums: Record<string, number> = {};
  for (const [pid, now] of b) {
    const before = a.get(pid)?.ticks ?? 0;
    const d = (now.ticks - before) / CLK_TCK;
    if (d <= 0) continue;
    const role = byPid.get(pid) ?? (now.comm.startsWith('postgres') ? 'postgres' : now.comm.startsWith('nats-server') ? 'nats-server' : 'other processes');
    sums[role] = (sums[role] ?? 0) + d;
  }
  // Express as cores busy on average over the window.
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(sums)) out[k] = round(v / wallSeconds, 2);
  return out;
}

// --- peekd in a child process -------------------------------------------------------------

export interface PeekdHandle {
  child: Child;
  url: string;
  serverName: string;
  prefix: string;
  naming: Naming;
  stop(): Promise<void>;
}

export interface PeekdOptions {
  label: string;
  serverName?: string;
  env?: Record<string, string>;
  nodeFlags?: string[];
}

/** Starts peekd (bench/server.ts → startPeekd) in its own process on a fresh database and stream prefix. */
/** The environment every peekd the bench starts shares (add PEEKD_LISTEN, DATABASE_URL, roles). */
export function benchPeekdEnv(o: { serverName: string; dataDir: string; natsUrl: string; prefix: string; shards: number }): Record<string, string> {
  return {
    PEEKD_SERVER_NAME: o.serverName,
    PEEKD_DATA_DIR: o.dataDir,
    NATS_URL: o.natsUrl,
    PEEKD_STREAM_PREFIX: o.prefix,
    PEEKD_SHARDS: String(o.shards),
    PEEKD_ADMIN_TOKEN: ADMIN_TOKEN,
    PEEKD_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    // The bench is its own abuse: lift the per-device and per-address limits.
    PEEKD_PEEK_RATE_PER_SECOND: '1000000',
    PEEKD_PEEK_RATE_BURST: '1000000',
    PEEKD_MAX_PEEKS_PER_DEVICE: '1000000',
    // Bulk setup (100,000 peeks at once) waits on the projections far longer than a client should.
    PEEKD_PROJECTION_WAIT_MS: '600000',
    PEEKD_MAX_INBOUND_PEEKS_PER_SERVER: '1000000',
    PEEKD_REGISTRATION_RATE_PER_SECOND: '1000000',
  };
}

export async function startPeekdChild(services: Services, options: PeekdOptions): Promise<PeekdHandle> {
  const db = await services.database();
  const dataDir = services.tempDir(`${options.label}-`);
  const prefix = `${uniqueName('bench')}_`;
  const shards = 64;
  const serverName = options.serverName ?? `${uniqueName('hs')}.bench`;
  const logFile = logPath(`${options.label}-peekd`);
  const env: Record<string, string> = {
    ...benchPeekdEnv({ serverName, dataDir, natsUrl: services.natsUrl, prefix, shards }),
    // Port 0: the kernel's pick at bind time, read back from the child ('info'); a port
    // probed beforehand could be taken by then.
    PEEKD_LISTEN: '127.0.0.1:0',
    ...(options.env ?? {}),
  };
  if (db.url) env.DATABASE_URL = db.url;
  else env.DATABASE_URL = '';
  let child: Child;
  try {
    child = await Child.start({ module: 'server', env, nodeFlags: ['--expose-gc', '--max-old-space-size=8192', ...(options.nodeFlags ?? [])], logFile });
  } catch (err) {
    await db.drop().catch(() => undefined);
    throw err;
  }
  pin(child.pid, '0');
  const naming = new Naming(prefix, shards);
  const info = await child.call<{ url: string }>('info');
  return {
    child,
    url: info.url,
    serverName,
    prefix,
    naming,
    stop: async () => {
      await child.stop(60_000);
      await deleteStreams(services.nc, naming).catch((err) => log('deleteStreams failed:', String(err)));
      await db.drop().catch((err) => log('drop database failed:', String(err)));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Live device peeks appended straight to peekd's log from the bench's own process: the
 * PeekStarted events a room actor would append (same encoding, same subjects, the room's
 * current ROOMS sequence as roomSeq), pipelined on one connection so each subject keeps
 * its order. Passivate peekd's actors first (they rebuild from the log on their next
 * command), and let its projections catch up before measuring anything.
 */
export async function appendPeeksToLog(
  services: Services,
  naming: Naming,
  rooms: { roomId: string; peeks: { userId: string; deviceId: string }[] }[],
  lifetimeMs = 3_600_000,
): Promise<{ appended: number; ms: number }> {
  const t0 = Date.now();
  const log = await EventLog.open(services.nc, naming);
  const js = jetstream(services.nc);
  const now = Date.now();
  const items: { subject: string; data: Uint8Array }[] = [];
  let next = 0;
  const roomSeqs = new Array<number>(rooms.length);
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < rooms.length; i = next++) roomSeqs[i] = await log.lastSeq('rooms', rooms[i]!.roomId);
    }),
  );
  for (const [i, { roomId, peeks }] of rooms.entries()) {
    const subject = naming.roomSubject('peeks', roomId);
    for (const p of peeks) {
      const e: PeekStarted = { type: 'PeekStarted', v: 1, roomId, peek: { kind: 'device', userId: p.userId, deviceId: p.deviceId }, at: now, expiresAt: now + lifetimeMs, roomSeq: roomSeqs[i]! };
      items.push({ subject, data: encodePeekEvent(e) });
    }
  }
  // A window of publishes in flight, resolved in order: the stream stores them in order.
  const window: Promise<unknown>[] = [];
  let failed: unknown;
  for (const item of items) {
    window.push(js.publish(item.subject, item.data).catch((err: unknown) => (failed ??= err)));
    if (window.length >= 256) await window.shift();
    if (failed) throw failed;
  }
  await Promise.all(window);
  if (failed) throw failed;
  return { appended: items.length, ms: Date.now() - t0 };
}

/** The load generator (and raw-ceiling client) in its own process. */
export async function startLoadChild(services: Services, label: string): Promise<Child> {
  const child = await Child.start({ module: 'loadgen', logFile: logPath(`${label}-loadgen`), nodeFlags: ['--expose-gc', '--max-old-space-size=8192'] });
  pin(child.pid, '1');
  return child;
}

// --- statistics -------------------------------------------------------------------------

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export function fmtNum(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

// --- results ----------------------------------------------------------------------------

export interface Row {
  scenario: string;
  /** What is measured, with its unit. */
  metric: string;
  /** peekd's number, formatted. */
  value: string;
  /** The ceiling measured in the same run, formatted ('—' when the table has none). */
  ceiling: string;
  ratio?: number;
  goal: string;
  /** undefined: no goal on this row. */
  met?: boolean;
}

export interface ScenarioResult {
  scenario: string;
  rows: Row[];
  cores: CoresReport;
  /** Everything measured, for the JSON file. */
  details: Record<string, unknown>;
  /** Where the time goes, for goals missed (from profiles), and other remarks. */
  notes: string[];
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
}

export function machineInfo(): MachineInfo {
  const c = cpus();
  let os = '';
  try {
    os = readFileSync('/etc/os-release', 'utf8').match(/PRETTY_NAME="([^"]+)"/)?.[1] ?? '';
  } catch {
    // not Linux
  }
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    os,
  };
}

export function tableMarkdown(rows: Row[]): string {
  const head = ['scenario', 'what is measured', 'peekd', 'ceiling (same run)', 'ratio', 'goal', 'met'];
  const lines = [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map(
      (r) =>
        `| ${[r.scenario, r.metric, r.value, r.ceiling, r.ratio === undefined ? '—' : r.ratio.toFixed(r.ratio < 0.1 ? 3 : 2), r.goal, r.met === undefined ? '—' : r.met ? 'yes' : '**no**'].join(' | ')} |`,
    ),
  ];
  return lines.join('\n');
}

/** --quick runs name their files …-quick, so they never overwrite a full run's. */
let suffix = '';
export function markQuick(quick: boolean): void {
  suffix = quick ? '-quick' : '';
}

export function writeResult(result: ScenarioResult, extra: Record<string, unknown>): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  const file = join(RESULTS_DIR, `${date}-${result.scenario}${suffix}.json`);
  writeFileSync(file, `${JSON.stringify({ ...extra, ...result }, null, 2)}\n`);
  return file;
}

export function profilePath(name: string): string {
  mkdirSync(PROFILES_DIR, { recursive: true });
  return join(PROFILES_DIR, `${new Date().toISOString().slice(0, 10)}-${name}${suffix}.cpuprofile`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until true, for at most `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}
