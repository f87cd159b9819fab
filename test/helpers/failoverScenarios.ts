// The two failover scenarios, shared by test/integration/failover.test.ts and bench/soak.ts
// (no vitest imports). Each starts its own 3-node JetStream cluster, database, stream prefix
// and peekd instances, runs the load from failoverLoad.ts across a fault, checks the
// invariants, and removes everything.
//
// Two modes, by `databaseUrl`:
//   - Postgres (CI: DATABASE_URL set; the main, strongest mode): a database of its own on that
//     server (CREATE DATABASE), peekd as child processes, faults by SIGKILL, invariant e by
//     `peekd verify` in another process.
//   - no Postgres (`databaseUrl` empty: a machine with only Node and nats-server): embedded
//     PGlite, which one process only can hold. Invariant e through the serving peekd's admin API
//     (POST /_peekd/admin/v1/verify, PEEKD_ADMIN_TOKEN); see each scenario for its topology.
//
//   nodeLossScenario:     one all-roles peekd process; SIGKILL the node leading PEEKS, restart it
//                         later. Without Postgres the same, the process on PGlite in its data dir.
//   roomHostLossScenario: http,projections,federation + three `rooms` instances; crash the room
//                         host serving most of the load's rooms. Postgres: four processes, SIGKILL.
//                         Without Postgres: four in-process instances (startPeekd) sharing one
//                         in-memory PGlite, and the crash is an abrupt close of the victim's NATS
//                         connection (no lease release: its leases lapse, as after a SIGKILL).
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.ts';
import { Naming } from '../../src/events/subjects.ts';
import { startPeekd, type Peekd } from '../../src/server.ts';
import { openDatabase } from '../../src/store/db.ts';
import {
  checkInvariants,
  countRecords,
  type CheckOptions,
  formatCounts,
  longestOutages,
  prepareLoad,
  startLoad,
  type CheckReport,
  type LoadCounts,
  type LoadRecord,
  type Violation,
} from './failoverLoad.ts';
import { freePort, startNatsCluster, type NatsCluster } from './natsCluster.ts';
import { parseLogLine, startPeekdProcess, type PeekdProcess } from './peekdProcess.ts';

export interface ScenarioOptions {
  /**
   * A Postgres server URL (CI's DATABASE_URL): the scenario creates and drops its own database
   * on it. Empty: the fallback without Postgres (embedded PGlite; see the top of this file).
   */
  databaseUrl: string;
  /** Progress lines (timeline). Default: silent. */
  log?: (line: string) => void;
}

export interface ScenarioResult {
  name: string;
  /** Which mode ran: the database, where peekd ran, and what the fault was. */
  mode: string;
  durationMs: number;
  counts: LoadCounts;
  violations: Violation[];
  report?: CheckReport;
  /** What happened when (ms since the load started). */
  timeline: string[];
  /** Things worth reading that are not violations (error log lines, …). */
  notes: string[];
  /** Every process's output, for evidence. */
  logs: { source: string; lines: string[] }[];
}

const SHARDS = 8;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A fresh database on the server of `baseUrl`; `drop()` removes it. */
export async function createScratchDatabase(baseUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  if (!baseUrl) throw new Error('the failover scenarios need Postgres: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres); processes cannot share an embedded PGlite database');
  const name = `peekd_fo_${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
  const { default: postgres } = await import('postgres');
  const admin = postgres(baseUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(baseUrl);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const a = postgres(baseUrl, { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

/** Counts of the interesting log lines of one process. */
function logNotes(source: string, lines: readonly string[]): { notes: string[]; serverRetries: number } {
  let serverRetries = 0;
  let warn = 0;
  let error = 0;
  const serious: string[] = [];
  const first503: string[] = [];
  for (const l of lines) {
    const o = parseLogLine(l);
    if (!o) {
      if (l.trim() && !/^\s*$/.test(l)) serious.push(l);
      continue;
    }
    if (o.msg === 'command retried') serverRetries++;
    const level = typeof o.level === 'number' ? o.level : 30;
    if (level >= 50) {
      error++;
      serious.push(l);
    } else if (level >= 40) {
      warn++;
      if (o.msg === 'request answered 503 (transient)' && first503.length < 2) first503.push(l);
    }
  }
  const notes = [`${source}: ${lines.length} log lines, ${warn} warnings, ${error} errors, ${serverRetries} 'command retried'`];
  for (const l of serious.slice(0, 10)) notes.push(`${source} ERROR/OTHER: ${l.length > 2000 ? `${l.slice(0, 2000)}…` : l}`);
  if (serious.length > 10) notes.push(`${source}: … ${serious.length - 10} more error lines`);
  for (const l of first503) notes.push(`${source} first 503s: ${l.length > 1500 ? `${l.slice(0, 1500)}…` : l}`);
  return { notes, serverRetries };
}

interface Fixture {
  cluster: NatsCluster;
  /** The scenario's Postgres database; undefined without Postgres (embedded PGlite). */
  db?: { url: string; drop(): Promise<void> };
  /** PEEKD_ADMIN_TOKEN of the instances, without Postgres (invariant e through the admin API). */
  adminToken?: string;
  dataDir: string;
  prefix: string;
  serverName: string;
  port: number;
  env: Record<string, string>;
  cleanups: (() => Promise<unknown>)[];
}

async function fixture(label: string, cleanups: (() => Promise<unknown>)[], databaseUrl: string): Promise<Fixture> {
  const cluster = await startNatsCluster();
  cleanups.push(() => cluster.stop());
  let db: Fixture['db'];
  if (databaseUrl) {
    const created = await createScratchDatabase(databaseUrl);
    db = created;
    cleanups.push(() => created.drop());
  }
  const adminToken = db ? undefined : randomBytes(16).toString('hex');
  const dataDir = mkdtempSync(join(tmpdir(), `peekd-${label}-`));
  cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
  const id = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const prefix = `${label}${id}_`;
  const serverName = `${label}${id}.test`;
  const port = await freePort();
  const env: Record<string, string> = {
    NATS_URL: cluster.url,
    // Empty (not inherited from this process): embedded PGlite in PEEKD_DATA_DIR.
    DATABASE_URL: db?.url ?? '',
    ...(adminToken ? { PEEKD_ADMIN_TOKEN: adminToken } : {}),
    PEEKD_STREAM_REPLICAS: '3',
    PEEKD_STREAM_PREFIX: prefix,
    PEEKD_SHARDS: String(SHARDS),
    PEEKD_LISTEN: `127.0.0.1:${port}`,
    PEEKD_SERVER_NAME: serverName,
    PEEKD_DATA_DIR: dataDir,
    PEEKD_REGISTRATION_RATE_PER_SECOND: '1000',
    PEEKD_PEEK_RATE_PER_SECOND: '1000',
    PEEKD_PEEK_RATE_BURST: '1000',
    PEEKD_PEEK_LIFETIME_MS: '3600000',
    PEEKD_LEASE_TTL_MS: '3000',
    // 'command retried' is a debug line: the counts report server-side retries.
    PEEKD_LOG_LEVEL: 'debug',
  };
  return { cluster, db, adminToken, dataDir, prefix, serverName, port, env, cleanups };
}

async function runCleanups(cleanups: (() => Promise<unknown>)[], notes: string[]): Promise<void> {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (err) {
      notes.push(`cleanup failed: ${(err as Error).message}`);
    }
  }
}

/**
 * How invariant e runs: with Postgres, the checkpoints read from the database and `peekd
 * verify` in a process of its own; without, the admin API of the peekd at `httpUrl` (the
 * process or instance holding the PGlite database).
 */
function projectionCheck(f: Fixture, httpUrl: string): Pick<CheckOptions, 'databaseUrl' | 'verifyEnv' | 'adminVerify'> {
  if (f.db) {
    return {
      databaseUrl: f.db.url,
      verifyEnv: {
        NATS_URL: f.cluster.url,
        DATABASE_URL: f.db.url,
        PEEKD_STREAM_PREFIX: f.prefix,
        PEEKD_SHARDS: String(SHARDS),
        PEEKD_SERVER_NAME: f.serverName,
        PEEKD_DATA_DIR: f.dataDir,
        PEEKD_STREAM_REPLICAS: '3',
      },
    };
  }
  return { adminVerify: { baseUrl: httpUrl, token: f.adminToken! } };
}

function verifySummary(report: CheckReport): string {
  const v = report.verify;
  if (!v) return 'verify not run';
  return v.via === 'peekd verify' ? `verify exit ${v.code} in ${v.durationMs} ms` : `admin API verify ${v.code === 0 ? 'equal' : v.code === 1 ? 'DIFFERENT' : 'failed'} in ${v.durationMs} ms`;
}

function liveness(proc: PeekdProcess): () => string | null {
  let exit: string | null = null;
  void proc.exited.then((e) => (exit = `code ${e.code}, signal ${e.signal}`));
  return () => exit;
}

/** Which request IDs / rooms succeeded after `t`. */
function successesAfter(records: readonly LoadRecord[], t: number, rooms?: ReadonlySet<string>): number {
  return records.filter((r) => r.status === 200 && r.startedAt >= t && (!rooms || rooms.has(r.room))).length;
}

// ------------------------------------------------------------------------------------------

export interface NodeLossTimings {
  /** Load before the kill (default 3 s). */
  killAfterMs: number;
  /** The node stays down this long (default 8 s). */
  downMs: number;
  /** Load after the restart (default 5 s). */
  tailMs: number;
  /** The request bound: client timeout (default 30 s). */
  boundMs: number;
}

/**
 * NATS node loss: a 3-node cluster, one all-roles peekd on R3 streams. Load; SIGKILL the node
 * leading PEEKS; restart it; more load; stop; wait for a healthy cluster; check a–e, that
 * requests succeeded after the kill, and that peekd is still alive.
 */
export async function nodeLossScenario(opts: ScenarioOptions, timings: Partial<NodeLossTimings> = {}): Promise<ScenarioResult> {
  const t: NodeLossTimings = { killAfterMs: 3_000, downMs: 8_000, tailMs: 5_000, boundMs: 30_000, ...timings };
  const name = 'NATS node loss';
  const mode = opts.databaseUrl
    ? 'Postgres; one peekd process; a NATS node SIGKILLed; e by `peekd verify`'
    : 'no Postgres: one peekd process on embedded PGlite in its data dir; a NATS node SIGKILLed; e by the admin API verify';
  const started = Date.now();
  const say = (s: string) => opts.log?.(`[${name}] ${s}`);
  const cleanups: (() => Promise<unknown>)[] = [];
  const notes: string[] = [];
  const timeline: string[] = [];
  const violations: Violation[] = [];
  const logs: ScenarioResult['logs'] = [];
  let records: LoadRecord[] = [];
  let report: CheckReport | undefined;
  let serverRetries = 0;
  let natsTail: (() => string) | undefined;
  try {
    const f = await fixture('fa', cleanups, opts.databaseUrl);
    natsTail = () => f.cluster.logTails(process.env.FAILOVER_DUMP_DIR ? 400 : 60);
    say(`cluster up (${f.cluster.urls.join(' ')}), prefix ${f.prefix}; ${mode}`);
    const proc = await startPeekdProcess({ env: f.env, name: 'peekd-all' });
    cleanups.push(() => proc.stop());
    logs.push({ source: proc.name, lines: proc.lines });
    const exitOf = liveness(proc);
    const peeksStream = `${f.prefix}PEEKS`;
    const roomsStream = `${f.prefix}ROOMS`;
    await f.cluster.waitHealthy(peeksStream);
    await f.cluster.waitHealthy(roomsStream);
    say(`peekd ready at ${proc.url}`);

    const setup = await prepareLoad(proc.url!, { peekers: 6, rooms: 4, timeoutMs: t.boundMs });
    const t0 = Date.now();
    const mark = (s: string) => {
      timeline.push(`+${((Date.now() - t0) / 1000).toFixed(1)} s ${s}`);
      say(s);
    };
    const load = startLoad(setup, { timeoutMs: t.boundMs, durationMs: t.killAfterMs + t.downMs + t.tailMs + 30_000, senders: 2 });
    mark(`load started: ${setup.peekers.length} peekers, 2 senders, ${setup.rooms.length} rooms`);
    await sleep(t.killAfterMs);
    const leader = await f.cluster.streamLeader(peeksStream);
    const roomsLeader = await f.cluster.streamLeader(roomsStream).catch(() => '?');
    const victim = f.cluster.nodeByName(leader);
    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    mark(`SIGKILLed ${leader} (leader of ${peeksStream}; ${roomsStream} led by ${roomsLeader}) after ${load.records.length} requests`);
    await sleep(t.downMs);
    await victim.start();
    const restartedAt = Date.now();
    mark(`restarted ${leader}; ${load.records.length} requests so far`);
    await sleep(t.tailMs);
    load.stop();
    records = await load.done;
    mark(`load stopped: ${records.length} requests`);
    await f.cluster.waitHealthy(peeksStream, 60_000);
    await f.cluster.waitHealthy(roomsStream, 60_000);
    mark('cluster healthy');

    report = await checkInvariants({ records, natsUrls: f.cluster.urls, prefix: f.prefix, shards: SHARDS, boundMs: t.boundMs, ...projectionCheck(f, proc.url!) });
    violations.push(...report.violations);
    mark(`invariants checked: ${report.violations.length} violations; ${verifySummary(report)}`);

    const afterKill = successesAfter(records, killedAt);
    const afterRestart = successesAfter(records, restartedAt);
    const whileDown = records.filter((r) => r.status === 200 && r.startedAt >= killedAt && r.endedAt <= restartedAt).length;
    notes.push(`successful requests started after the kill: ${afterKill} (answered while ${leader} was down: ${whileDown}), after the restart: ${afterRestart}`);
    if (afterKill === 0) violations.push({ invariant: 'scenario', message: `no request started after ${leader} was killed succeeded: peekd did not recover` });
    const exit = exitOf();
    if (exit !== null) violations.push({ invariant: 'scenario', message: `the peekd process died (${exit}); last output:\n${proc.lines.slice(-30).join('\n')}` });
    const n = logNotes(proc.name, proc.lines);
    notes.push(...n.notes);
    serverRetries = n.serverRetries;
  } catch (err) {
    violations.push({ invariant: 'scenario', message: `the scenario failed: ${(err as Error).stack ?? String(err)}` });
  } finally {
    if ((violations.length > 0 || process.env.FAILOVER_DUMP_DIR) && natsTail) logs.push({ source: 'nats-cluster', lines: natsTail().split('\n') });
    await runCleanups(cleanups, notes);
  }
  return finish({ name, mode, durationMs: Date.now() - started, counts: { ...countRecords(records), serverRetries }, violations, report, timeline, notes, logs }, records);
}

// ------------------------------------------------------------------------------------------

export interface RoomHostLossTimings {
  /** Load before the kill (default 3 s). */
  killAfterMs: number;
  /** Load after the kill (default 10 s). */
  tailMs: number;
  /** The request bound: lease TTL + the 5 s retry deadline + slack (default 20 s). */
  boundMs: number;
}

/** host IDs (from the 'room host holds its shards' log line) of each rooms process. */
function hostIdOf(proc: PeekdProcess): string | undefined {
  for (const l of proc.lines) {
    const o = parseLogLine(l);
    if (o?.msg === 'room host holds its shards' && typeof o.hostId === 'string') return o.hostId;
  }
  return undefined;
}

/** One peekd instance of the room host topology: a process, or a startPeekd instance in this process. */
interface Member {
  name: string;
  /** Its lease holder ID (room hosts). */
  hostId?: string;
  /** Its output (JSON log lines). */
  lines: string[];
  /** null while it is up; otherwise what happened to it. */
  down(): string | null;
  /** Crashes it the way the mode does (SIGKILL; or an abrupt close of its NATS connection). */
  crash(): Promise<void>;
  /** What the crash was, for the timeline. */
  crashed(): string;
}

interface Topology {
  httpUrl: string;
  members: Member[];
  hosts: Member[];
}

/**
 * Postgres: four `peekd serve` processes on the scenario's database. The HTTP process first: it
 * creates the streams, migrates and writes the signing key the room hosts then share (one data dir).
 */
async function processTopology(f: Fixture, cleanups: (() => Promise<unknown>)[], logs: ScenarioResult['logs']): Promise<Topology> {
  const member = (p: PeekdProcess): Member => {
    const exitOf = liveness(p);
    return { name: p.name, lines: p.lines, down: exitOf, crash: async () => void (await p.kill('SIGKILL')), crashed: () => `SIGKILLed ${p.name} (pid ${p.pid})` };
  };
  const http = await startPeekdProcess({ env: { ...f.env, PEEKD_ROLES: 'http,projections,federation' }, name: 'http' });
  cleanups.push(() => http.stop());
  logs.push({ source: http.name, lines: http.lines });
  const procs = await Promise.all(
    [1, 2, 3].map(async (i) => {
      const p = await startPeekdProcess({ env: { ...f.env, PEEKD_ROLES: 'rooms' }, name: `rooms-${i}` });
      cleanups.push(() => p.stop());
      logs.push({ source: p.name, lines: p.lines });
      return p;
    }),
  );
  const hosts = procs.map((p) => ({ ...member(p), hostId: hostIdOf(p) }));
  return { httpUrl: http.url!, members: [member(http), ...hosts], hosts };
}

/** Resolves `p`, or rejects after `ms` (a cleanup step must not hang the scenario). */
function bounded<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

/**
 * No Postgres: child processes cannot share a PGlite database, so the same topology runs in
 * this process: four startPeekd instances, each with its own NATS connection (to the
 * scenario's cluster) and leases, sharing one in-memory PGlite database, one data dir and one
 * stream prefix. The crash closes the victim's NATS connection abruptly (no lease release):
 * to everyone else it is gone as after a SIGKILL, and its leases lapse after the TTL. Its
 * log lines are captured (pino at debug level) like a process's output.
 */
async function inProcessTopology(f: Fixture, cleanups: (() => Promise<unknown>)[], logs: ScenarioResult['logs']): Promise<Topology> {
  const database = await openDatabase({ memory: true });
  cleanups.push(() => database.close());
  const start = async (name: string, roles: string): Promise<{ member: Member; url?: string }> => {
    const lines: string[] = [];
    const logger = pino({ name: 'peekd', level: 'debug' }, { write: (line: string) => void lines.push(line.replace(/\n$/, '')) });
    const config = loadConfig({ ...f.env, PEEKD_ROLES: roles, PEEKD_LISTEN: '127.0.0.1:0', DATABASE_URL: '' }, undefined);
    const p: Peekd = await startPeekd(config, { database, logger });
    cleanups.push(() => bounded(`closing ${name}`, p.close(), 15_000));
    logs.push({ source: name, lines });
    let crashed = false;
    const member: Member = {
      name,
      hostId: p.host ? p.hostId : undefined,
      lines,
      down: () => (crashed ? 'crashed' : p.nc.isClosed() ? 'its NATS connection closed' : null),
      crash: async () => {
        crashed = true;
        await p.nc.close();
      },
      crashed: () => `closed the NATS connection of in-process instance ${name} abruptly (no lease release)`,
    };
    return { member, url: p.url };
  };
  // The HTTP instance first (streams, signing key), as with processes.
  const http = await start('http', 'http,projections,federation');
  // The room hosts one after another. Each room host creates the R3 snapshots KV bucket at
  // startup (src/actors/snapshots.ts, no retry); three creates of it at the same instant on a
  // fresh 3-node cluster can time out (seen here, and reproduced outside peekd: 2 of 3
  // concurrent Kvm.create calls timed out in 1 of 4 tries; one after another, none), and
  // startPeekd fails. Processes boot with enough jitter that they have not hit it.
  const hosts: Member[] = [];
  for (const i of [1, 2, 3]) hosts.push((await start(`rooms-${i}`, 'rooms')).member);
  if (!http.url) throw new Error('the in-process http instance has no URL');
  return { httpUrl: http.url, members: [http.member, ...hosts], hosts };
}

/**
 * Room host loss: one http,projections,federation instance and three `rooms` instances
 * (lease TTL 3 s). Load; crash the room host holding most of the load's rooms (Postgres:
 * SIGKILL of its process; without: an abrupt close of its NATS connection, in-process); more
 * load; stop; check a–e with the bound TTL + 5 s + slack, that the victim's rooms were served
 * again after the crash, and that the other instances are alive.
 */
export async function roomHostLossScenario(opts: ScenarioOptions, timings: Partial<RoomHostLossTimings> = {}): Promise<ScenarioResult> {
  const t: RoomHostLossTimings = { killAfterMs: 3_000, tailMs: 10_000, boundMs: 20_000, ...timings };
  const name = 'room host loss';
  const mode = opts.databaseUrl
    ? 'Postgres; four peekd processes; a room host process SIGKILLed; e by `peekd verify`'
    : "no Postgres: four in-process peekd instances on one in-memory PGlite; a room host's NATS connection closed abruptly; e by the admin API verify";
  const started = Date.now();
  const say = (s: string) => opts.log?.(`[${name}] ${s}`);
  const cleanups: (() => Promise<unknown>)[] = [];
  const notes: string[] = [];
  const timeline: string[] = [];
  const violations: Violation[] = [];
  const logs: ScenarioResult['logs'] = [];
  let records: LoadRecord[] = [];
  let report: CheckReport | undefined;
  let serverRetries = 0;
  let natsTail: (() => string) | undefined;
  let members: Member[] = [];
  try {
    const f = await fixture('fb', cleanups, opts.databaseUrl);
    natsTail = () => f.cluster.logTails(process.env.FAILOVER_DUMP_DIR ? 400 : 60);
    say(`cluster up, prefix ${f.prefix}; ${mode}`);
    const top = f.db ? await processTopology(f, cleanups, logs) : await inProcessTopology(f, cleanups, logs);
    members = top.members;
    const hostIds = new Map(top.hosts.map((m) => [m.hostId, m]));
    if (hostIds.size !== 3 || hostIds.has(undefined)) throw new Error(`cannot tell the room hosts' IDs: ${[...hostIds.keys()].join(', ')}`);

    // Leases: every shard held, by all three hosts.
    const naming = new Naming(f.prefix, SHARDS);
    const nc = await connect({ servers: f.cluster.urls, name: 'failover-leases', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    cleanups.push(() => nc.close());
    const kv = await new Kvm(nc).open(naming.kvBucket('leases'));
    const holders = async (): Promise<Map<number, string>> => {
      const m = new Map<number, string>();
      for (let s = 0; s < SHARDS; s++) {
        const e = await kv.get(`shard.${s}`);
        if (e && e.operation === 'PUT') m.set(s, e.string());
      }
      return m;
    };
    const waitLeases = async (what: string, ok: (m: Map<number, string>) => boolean, withinMs: number): Promise<Map<number, string>> => {
      const deadline = Date.now() + withinMs;
      for (;;) {
        const m = await holders();
        if (ok(m)) return m;
        if (Date.now() > deadline) throw new Error(`leases: ${what} not reached in ${withinMs} ms; holders: ${JSON.stringify([...m])}`);
        await sleep(200);
      }
    };
    await waitLeases('every shard held, by all three hosts', (m) => m.size === SHARDS && new Set(m.values()).size === 3 && [...m.values()].every((h) => hostIds.has(h)), 30_000);
    say(`${top.hosts.length} room hosts hold the ${SHARDS} shards`);

    const setup = await prepareLoad(top.httpUrl, { peekers: 6, rooms: 6, timeoutMs: t.boundMs });
    // The victim: the host serving most of the load's rooms (as the leases stand now).
    const now = await holders();
    const roomsOf = new Map<string, string[]>();
    for (const r of setup.rooms) {
      const h = now.get(naming.shardOf(r)) ?? '?';
      roomsOf.set(h, [...(roomsOf.get(h) ?? []), r]);
    }
    const [victimId, victimRooms] = [...roomsOf].filter(([h]) => hostIds.has(h)).sort((a, b) => b[1].length - a[1].length)[0]!;
    const victim = hostIds.get(victimId)!;
    const victimShards = [...now].filter(([, h]) => h === victimId).map(([s]) => s);

    const t0 = Date.now();
    const mark = (s: string) => {
      timeline.push(`+${((Date.now() - t0) / 1000).toFixed(1)} s ${s}`);
      say(s);
    };
    const load = startLoad(setup, { timeoutMs: t.boundMs, durationMs: t.killAfterMs + t.tailMs + 30_000, senders: 2 });
    mark(`load started: ${setup.peekers.length} peekers, 2 senders, ${setup.rooms.length} rooms (per host: ${[...roomsOf].map(([h, rs]) => `${hostIds.get(h)?.name ?? h}=${rs.length}`).join(' ')})`);
    await sleep(t.killAfterMs);
    const killedAt = Date.now();
    await victim.crash();
    mark(`${victim.crashed()} (shards ${victimShards.join(',')}; ${victimRooms.length} of the load's rooms) after ${load.records.length} requests`);
    const survivors = new Set([...hostIds.keys()].filter((h) => h !== victimId) as string[]);
    const taken = waitLeases("the victim's shards taken over", (m) => m.size === SHARDS && [...m.values()].every((h) => survivors.has(h)), t.tailMs + 20_000).then(
      () => mark('the survivors hold every shard'),
      (err: Error) => violations.push({ invariant: 'scenario', message: err.message }),
    );
    await sleep(t.tailMs);
    load.stop();
    records = await load.done;
    await taken;
    mark(`load stopped: ${records.length} requests`);

    report = await checkInvariants({ records, natsUrls: f.cluster.urls, prefix: f.prefix, shards: SHARDS, boundMs: t.boundMs, ...projectionCheck(f, top.httpUrl) });
    violations.push(...report.violations);
    mark(`invariants checked: ${report.violations.length} violations; ${verifySummary(report)}`);

    const afterKill = successesAfter(records, killedAt, new Set(victimRooms));
    notes.push(`successful requests to the victim's rooms started after the kill: ${afterKill}; to any room: ${successesAfter(records, killedAt)}`);
    if (afterKill === 0)
      violations.push({ invariant: 'scenario', message: `no request to a room of ${victim.name} (${victimRooms.join(', ')}) succeeded after the kill: its shards were not taken over` });
    for (const m of members) {
      if (m === victim) continue;
      const down = m.down();
      if (down !== null) violations.push({ invariant: 'scenario', message: `${m.name} is down (${down}); last output:\n${m.lines.slice(-30).join('\n')}` });
    }
  } catch (err) {
    violations.push({ invariant: 'scenario', message: `the scenario failed: ${(err as Error).stack ?? String(err)}` });
  } finally {
    for (const m of members) {
      const n = logNotes(m.name, m.lines);
      notes.push(...n.notes);
      serverRetries += n.serverRetries;
    }
    if ((violations.length > 0 || process.env.FAILOVER_DUMP_DIR) && natsTail) logs.push({ source: 'nats-cluster', lines: natsTail().split('\n') });
    await runCleanups(cleanups, notes);
  }
  return finish({ name, mode, durationMs: Date.now() - started, counts: { ...countRecords(records), serverRetries }, violations, report, timeline, notes, logs }, records);
}

/**
 * With FAILOVER_DUMP_DIR set: writes the scenario's records, violations, timeline and every
 * process's output there (one directory per run), for reading after the fact.
 */
export function dumpScenario(r: ScenarioResult, records: readonly LoadRecord[], dir = process.env.FAILOVER_DUMP_DIR): string | undefined {
  if (!dir) return undefined;
  const out = join(dir, `${r.name.replace(/\W+/g, '-')}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'records.json'), JSON.stringify(records, null, 1));
  writeFileSync(
    join(out, 'result.json'),
    JSON.stringify(
      { name: r.name, mode: r.mode, durationMs: r.durationMs, counts: r.counts, violations: r.violations, timeline: r.timeline, notes: r.notes, log: r.report?.log, verify: r.report?.verify },
      null,
      1,
    ),
  );
  for (const { source, lines } of r.logs) writeFileSync(join(out, `${source}.log`), lines.join('\n'));
  return out;
}

function finish(r: ScenarioResult, records: readonly LoadRecord[], t0?: number): ScenarioResult {
  if (records.length > 0) {
    const base = t0 ?? Math.min(...records.map((x) => x.startedAt));
    const gaps = Object.entries(longestOutages(records)).map(([k, g]) => `${k} ${(g.ms / 1000).toFixed(1)} s (+${((g.from - base) / 1000).toFixed(1)} to +${((g.to - base) / 1000).toFixed(1)} s)`);
    r.notes.push(`longest time without a 200, per kind: ${gaps.join('; ')}`);
  }
  if (r.report?.projectionsCaughtUpMs !== undefined) r.notes.push(`read models reached the end of the log ${r.report.projectionsCaughtUpMs} ms after the check began`);
  const dumped = dumpScenario(r, records);
  if (dumped) r.notes.push(`records and process logs written to ${dumped}`);
  return r;
}

/** A scenario's result as a few lines of text. */
export function formatScenario(r: ScenarioResult): string {
  const lines = [`${r.name}: ${r.violations.length === 0 ? 'OK' : `${r.violations.length} VIOLATIONS`} in ${(r.durationMs / 1000).toFixed(1)} s`, `  mode: ${r.mode}`, `  ${formatCounts(r.counts)}`];
  if (r.report)
    lines.push(`  log: ${r.report.log.peeksEnvelopes} PEEKS envelopes (${r.report.log.peekEvents} events), ${r.report.log.roomsEnvelopes} ROOMS envelopes (${r.report.log.roomEvents} events)`);
  for (const l of r.timeline) lines.push(`  ${l}`);
  return lines.join('\n');
}
