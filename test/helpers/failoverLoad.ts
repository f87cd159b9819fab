// Load and invariants for failover tests (test/integration/failover.test.ts) and the soak
// script (bench/soak.ts). No vitest imports: the soak script runs this outside vitest.
//
//   prepareLoad()     registers users (one owner, N peekers) and has the owner create K
//                     world_readable rooms on a peekd base URL (loopback only).
//   runLoad()         W workers, bounded in time and request count: each peeker device peeks
//                     (start or renew) and unpeeks random rooms, one request at a time (so the
//                     last command of a (room, device) is well defined); sender workers send
//                     messages as the owner. Every request has a client-side timeout and is
//                     recorded (status, errcode, X-Request-Id, Retry-After, latency, body). A
//                     503 is repeated (after Retry-After, capped) as a new request; a send is
//                     repeated with the same txnId.
//   checkInvariants() reads the whole PEEKS and ROOMS streams of the prefix from NATS and checks
//                     a–e (see the comment on the function), then runs `peekd verify` (Postgres)
//                     or POST /_peekd/admin/v1/verify on the running peekd (embedded PGlite).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { throughSeq } from '../../src/events/envelope.ts';
import { decodePeekEnvelope, peekKey, type PeekEvent } from '../../src/events/peekEvents.ts';
import { decodeRoomEnvelope, type RoomEvent } from '../../src/events/roomEvents.ts';
import { Naming, type StreamKind } from '../../src/events/subjects.ts';
import { readModels } from '../../src/projections/index.ts';
import type { VerifyResult } from '../../src/projections/rebuild.ts';
import { formatVerify } from '../../src/operator/commands.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

// ------------------------------------------------------------------------------------------
// HTTP

export interface Account {
  userId: string;
  deviceId: string;
  token: string;
}

export type RequestKind = 'peek' | 'unpeek' | 'send';

export interface LoadRecord {
  kind: RequestKind;
  room: string;
  userId: string;
  deviceId: string;
  /** For sends: the transaction ID (kept when a send is repeated). */
  txnId?: string;
  /** X-Request-Id of the earlier attempt this request repeats (after a 503 or a timeout). */
  retryOf?: string;
  /** HTTP status; 0: the client-side timeout fired; -1: a network error (no answer). */
  status: number;
  errcode?: string;
  error?: string;
  /** The X-Request-Id response header: the command ID of the request's (first) command. */
  requestId?: string;
  retryAfter?: string;
  latencyMs: number;
  startedAt: number;
  endedAt: number;
  body: unknown;
  /** Per worker, in issue order. */
  worker: number;
  index: number;
}

interface Answer {
  status: number;
  body: unknown;
  requestId?: string;
  retryAfter?: string;
  error?: string;
  latencyMs: number;
  startedAt: number;
  endedAt: number;
}

function assertLoopback(baseUrl: string): void {
  const host = new URL(baseUrl).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host)) throw new Error(`failover load runs against loopback only, got ${baseUrl}`);
}

/** One HTTP request with a client-side timeout; never throws. */
async function call(baseUrl: string, method: string, path: string, opts: { token?: string; body?: unknown; timeoutMs: number }): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const startedAt = Date.now();
  const t0 = performance.now();
  const done = (a: Omit<Answer, 'latencyMs' | 'startedAt' | 'endedAt'>): Answer => ({ ...a, latencyMs: performance.now() - t0, startedAt, endedAt: Date.now() });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeoutMs);
  try {
    const res = await fetch(baseUrl + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: abort.signal });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: kept as text, the checker will say so
    }
    return done({ status: res.status, body, requestId: res.headers.get('x-request-id') ?? undefined, retryAfter: res.headers.get('retry-after') ?? undefined });
  } catch (err) {
    if (abort.signal.aborted) return done({ status: 0, body: undefined, error: `client timeout after ${opts.timeoutMs} ms` });
    return done({ status: -1, body: undefined, error: `network error: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause?: Error }).cause?.message})` : ''}` });
  } finally {
    clearTimeout(timer);
  }
}

const enc = encodeURIComponent;

// ------------------------------------------------------------------------------------------
// Setup

export interface LoadSetup {
  baseUrl: string;
  owner: Account;
  peekers: Account[];
  rooms: string[];
}

export interface PrepareOptions {
  peekers: number;
  rooms: number;
  /** Per request; default 30 s. */
  timeoutMs?: number;
  /** Localpart prefix; default random. */
  label?: string;
}

/** Repeats `fn` while it answers 503 (a room host not yet holding its shard), up to `withinMs`. */
async function setupCall(what: string, withinMs: number, fn: () => Promise<Answer>): Promise<Answer> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const a = await fn();
    if (a.status === 200) return a;
    if (a.status !== 503 || Date.now() > deadline) throw new Error(`${what}: ${a.status} ${a.error ?? ''} ${JSON.stringify(a.body)} (X-Request-Id ${a.requestId})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function prepareLoad(baseUrl: string, opts: PrepareOptions): Promise<LoadSetup> {
  assertLoopback(baseUrl);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const label = opts.label ?? `fo${randomBytes(3).toString('hex')}`;
  const register = async (localpart: string): Promise<Account> => {
    const a = await setupCall(`register ${localpart}`, 20_000, () =>
      call(baseUrl, 'POST', '/_matrix/client/v3/register', { body: { username: localpart, password: 'correct horse', auth: { type: 'm.login.dummy' } }, timeoutMs }),
    );
    const b = a.body as { user_id: string; device_id: string; access_token: string };
    return { userId: b.user_id, deviceId: b.device_id, token: b.access_token };
  };
  const owner = await register(`${label}owner`);
  const peekers = await Promise.all(Array.from({ length: opts.peekers }, (_, i) => register(`${label}peeker${i}`)));
  const rooms: string[] = [];
  for (let i = 0; i < opts.rooms; i++) {
    const a = await setupCall(`createRoom ${i}`, 20_000, () =>
      call(baseUrl, 'POST', '/_matrix/client/v3/createRoom', {
        token: owner.token,
        timeoutMs,
        body: {
          preset: 'public_chat',
          initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }],
        },
      }),
    );
    rooms.push((a.body as { room_id: string }).room_id);
  }
  return { baseUrl, owner, peekers, rooms };
}

// ------------------------------------------------------------------------------------------
// Load

export interface LoadOptions {
  /** The load stops by itself after this long (default 60 s), or earlier through `signal`. */
  durationMs?: number;
  /** Stops once this many requests were issued, all workers together (default 20 000). */
  maxRequests?: number;
  /** Client-side timeout of each request: the bound no request may exceed. */
  timeoutMs: number;
  /** Owner workers sending messages (default 2). One worker per peeker device besides. */
  senders?: number;
  /** Pause between one worker's requests (default 20 ms). */
  thinkMs?: number;
  /** Attempts per operation while it answers 503 or times out (default 3). */
  attempts?: number;
  /** Longest wait before repeating a 503'd request (Retry-After is honoured up to this; default 2 s). */
  maxRetryWaitMs?: number;
  signal?: AbortSignal;
}

export interface LoadHandle {
  /** Stops issuing new requests; in-flight ones finish (each within its timeout). */
  stop(): void;
  /** Every request, once all workers have finished. */
  done: Promise<LoadRecord[]>;
  /** The records so far (live view). */
  records: LoadRecord[];
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Starts the workers; returns at once. */
export function startLoad(setup: LoadSetup, opts: LoadOptions): LoadHandle {
  assertLoopback(setup.baseUrl);
  const durationMs = opts.durationMs ?? 60_000;
  const maxRequests = opts.maxRequests ?? 20_000;
  const thinkMs = opts.thinkMs ?? 20;
  const attempts = opts.attempts ?? 3;
  const maxRetryWaitMs = opts.maxRetryWaitMs ?? 2_000;
  const stopper = new AbortController();
  opts.signal?.addEventListener('abort', () => stopper.abort(), { once: true });
  const durationTimer = setTimeout(() => stopper.abort(), durationMs);
  const records: LoadRecord[] = [];
  let issued = 0;
  const stopped = () => stopper.signal.aborted || issued >= maxRequests;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
  let txnCounter = 0;

  /** Runs one operation, repeating it (as a new request) after a 503 or a timeout. */
  async function operation(worker: number, nextIndex: () => number, kind: RequestKind, room: string, who: Account, txnId?: string): Promise<void> {
    let retryOf: string | undefined;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (stopped()) return;
      issued++;
      const path =
        kind === 'peek'
          ? `/_matrix/client/v3/peek/${enc(room)}`
          : kind === 'unpeek'
            ? `/_matrix/client/v3/rooms/${enc(room)}/unpeek`
            : `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/${enc(txnId!)}`;
      const body = kind === 'send' ? { msgtype: 'm.text', body: `failover ${txnId}` } : {};
      const a = await call(setup.baseUrl, kind === 'send' ? 'PUT' : 'POST', path, { token: who.token, body, timeoutMs: opts.timeoutMs });
      const b = a.body as { errcode?: unknown; error?: unknown } | undefined;
      const rec: LoadRecord = {
        kind,
        room,
        userId: who.userId,
        deviceId: who.deviceId,
        ...(txnId ? { txnId } : {}),
        ...(retryOf ? { retryOf } : {}),
        status: a.status,
        ...(typeof b?.errcode === 'string' ? { errcode: b.errcode } : {}),
        ...(a.error ? { error: a.error } : typeof b?.error === 'string' ? { error: b.error } : {}),
        ...(a.requestId ? { requestId: a.requestId } : {}),
        ...(a.retryAfter ? { retryAfter: a.retryAfter } : {}),
        latencyMs: a.latencyMs,
        startedAt: a.startedAt,
        endedAt: a.endedAt,
        body: a.body,
        worker,
        index: nextIndex(),
      };
      records.push(rec);
      if (a.status !== 503 && a.status !== 0 && a.status !== -1) return;
      retryOf = a.requestId ?? retryOf;
      const hinted = Number(a.retryAfter);
      await sleep(Math.min(maxRetryWaitMs, Number.isFinite(hinted) && hinted > 0 ? hinted * 1000 : 500), stopper.signal);
    }
  }

  async function peekWorker(worker: number, who: Account): Promise<void> {
    let index = 0;
    const nextIndex = () => index++;
    while (!stopped()) {
      const room = pick(setup.rooms);
      await operation(worker, nextIndex, Math.random() < 0.6 ? 'peek' : 'unpeek', room, who);
      await sleep(thinkMs, stopper.signal);
    }
  }

  async function sendWorker(worker: number): Promise<void> {
    let index = 0;
    const nextIndex = () => index++;
    while (!stopped()) {
      const txnId = `fo-${worker}-${txnCounter++}-${randomBytes(3).toString('hex')}`;
      await operation(worker, nextIndex, 'send', pick(setup.rooms), setup.owner, txnId);
      await sleep(thinkMs, stopper.signal);
    }
  }

  const workers = [...setup.peekers.map((p, i) => peekWorker(i, p)), ...Array.from({ length: opts.senders ?? 2 }, (_, k) => sendWorker(setup.peekers.length + k))];
  const done = Promise.all(workers).then(() => {
    clearTimeout(durationTimer);
    return records;
  });
  return { stop: () => stopper.abort(), done, records };
}

// ------------------------------------------------------------------------------------------
// Counts

export interface LoadCounts {
  requests: number;
  byStatus: Record<string, number>;
  byKind: Record<string, Record<string, number>>;
  status503: number;
  /** Requests that repeated an earlier attempt after a 503 or a timeout. */
  clientRetries: number;
  /** Server-side command retries (RetryingCommandBus 'command retried' log lines), when known. */
  serverRetries?: number;
  timeouts: number;
  networkErrors: number;
  maxLatencyMs: number;
  p50LatencyMs: number;
  p99LatencyMs: number;
}

export function countRecords(records: readonly LoadRecord[]): LoadCounts {
  const byStatus: Record<string, number> = {};
  const byKind: Record<string, Record<string, number>> = {};
  for (const r of records) {
    const s = r.status === 0 ? 'timeout' : r.status === -1 ? 'network' : String(r.status);
    byStatus[s] = (byStatus[s] ?? 0) + 1;
    const k = (byKind[r.kind] ??= {});
    k[s] = (k[s] ?? 0) + 1;
  }
  const lat = records.map((r) => r.latencyMs).sort((a, b) => a - b);
  const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! : 0);
  return {
    requests: records.length,
    byStatus,
    byKind,
    status503: records.filter((r) => r.status === 503).length,
    clientRetries: records.filter((r) => r.retryOf !== undefined).length,
    timeouts: records.filter((r) => r.status === 0).length,
    networkErrors: records.filter((r) => r.status === -1).length,
    maxLatencyMs: Math.round(lat.at(-1) ?? 0),
    p50LatencyMs: Math.round(q(0.5)),
    p99LatencyMs: Math.round(q(0.99)),
  };
}

/**
 * Per kind, the longest time without a 200 answer while the load ran (between consecutive
 * 200s by answer time, and from the first request to the first 200): how long the fault made
 * that operation unavailable.
 */
export function longestOutages(records: readonly LoadRecord[]): Record<string, { ms: number; from: number; to: number }> {
  const out: Record<string, { ms: number; from: number; to: number }> = {};
  if (records.length === 0) return out;
  const start = Math.min(...records.map((r) => r.startedAt));
  const end = Math.max(...records.map((r) => r.endedAt));
  for (const kind of ['peek', 'unpeek', 'send']) {
    const oks = records
      .filter((r) => r.kind === kind && r.status === 200)
      .map((r) => r.endedAt)
      .sort((a, b) => a - b);
    let best = { ms: 0, from: start, to: start };
    let prev = start;
    for (const t of [...oks, end]) {
      if (t - prev > best.ms) best = { ms: t - prev, from: prev, to: t };
      prev = t;
    }
    out[kind] = best;
  }
  return out;
}

export function formatCounts(c: LoadCounts): string {
  const statuses = Object.entries(c.byStatus)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([s, n]) => `${s}:${n}`)
    .join(' ');
  return `${c.requests} requests [${statuses}], 503s ${c.status503}, client retries ${c.clientRetries}${c.serverRetries !== undefined ? `, server retries ${c.serverRetries}` : ''}, timeouts ${c.timeouts}, latency p50 ${c.p50LatencyMs} ms p99 ${c.p99LatencyMs} ms max ${c.maxLatencyMs} ms`;
}

// ------------------------------------------------------------------------------------------
// The log

export interface LoggedEnvelope<E> {
  seq: number;
  subject: string;
  commandId?: string;
  events: (E | null)[];
}

export interface StreamContents {
  peeks: LoggedEnvelope<PeekEvent>[];
  rooms: LoggedEnvelope<RoomEvent>[];
}

/** Every message of the kind's stream (an ordered consumer over `<prefix><kind>.>`), decoded. */
export async function readWholeStream<E>(nc: NatsConnection, naming: Naming, kind: StreamKind, stallMs = 15_000): Promise<LoggedEnvelope<E>[]> {
  const decode = (kind === 'peeks' ? decodePeekEnvelope : decodeRoomEnvelope) as (d: Uint8Array) => { commandId?: string; events: (E | null)[] };
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(naming.streamName(kind));
  const last = info.state.last_seq;
  if (info.state.messages === 0) return [];
  const js = jetstream(nc);
  const consumer = await js.consumers.get(naming.streamName(kind), { filter_subjects: naming.allSubjects(kind), deliver_policy: DeliverPolicy.All });
  const out: LoggedEnvelope<E>[] = [];
  const messages = await consumer.consume({ max_messages: 1000 });
  let stalled = false;
  const timer = setTimeout(function stall() {
    stalled = true;
    void messages.close();
  }, stallMs);
  try {
    for await (const m of messages) {
      timer.refresh();
      const { commandId, events } = decode(m.data);
      out.push({ seq: m.seq, subject: m.subject, commandId, events });
      if (m.seq >= last) break;
    }
  } finally {
    clearTimeout(timer);
    await messages.close();
  }
  // An ordered consumer is served by one replica; right after a node came back, it has been seen
  // to stop short of the stream's last message (2.9.10: 652 of 653, for good). The log is
  // what is checked here, not that consumer: the rest is read message by message from the
  // stream's leader, and a message it does not have is still an error.
  if (stalled || out.at(-1)?.seq !== last) {
    const from = (out.at(-1)?.seq ?? 0) + 1;
    for (let seq = from; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(naming.streamName(kind), { seq }).catch((err: unknown) => {
        throw new Error(`reading ${naming.streamName(kind)} ${stalled ? 'stalled' : 'ended'} at ${from - 1} of ${last}, and the leader did not give message ${seq}: ${(err as Error).message}`);
      });
      if (!m) throw new Error(`reading ${naming.streamName(kind)} ${stalled ? 'stalled' : 'ended'} at ${from - 1} of ${last}, and the leader has no message ${seq}`);
      const { commandId, events } = decode(m.data);
      out.push({ seq: m.seq, subject: m.subject, commandId, events });
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Invariants

export type Invariant = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'scenario';

export interface Violation {
  invariant: Invariant;
  message: string;
  /** X-Request-Id of the request concerned, when there is one (to find its log lines). */
  requestId?: string;
}

export const INVARIANTS: Record<Invariant, string> = {
  a: 'no 500 (no 5xx but 503), no request past the bound, every 503 with Retry-After and a Matrix error body',
  b: 'every 200 that must append has its command ID in exactly one envelope per stream; no command ID twice on a stream',
  c: 'every sent event_id exactly once in ROOMS',
  d: "each device's peek state at the end of the log agrees with its last successful command",
  e: 'the projections caught up with the log and equal a rebuild (peekd verify, or the admin API verify without Postgres)',
  f: 'no client error other than the expected ones (unpeek of a room not peeked: 400 M_BAD_STATE)',
  scenario: 'scenario checks (recovered after the fault, processes alive)',
};

export interface CheckOptions {
  records: readonly LoadRecord[];
  /** NATS URLs (the cluster's); the checker connects to all of them. */
  natsUrls: string[];
  prefix: string;
  shards: number;
  /** The bound no request may exceed (the load's client timeout). */
  boundMs: number;
  /** Env for `peekd verify` (NATS_URL, DATABASE_URL, PEEKD_STREAM_PREFIX, …); unset: verify not run. */
  verifyEnv?: Record<string, string>;
  /** Postgres URL of the deployment's database: checks the projections caught up before verify. */
  databaseUrl?: string;
  /**
   * Without Postgres (the embedded PGlite database is held by the peekd that serves, no second
   * process may open it): invariant e through the admin API of that peekd, POST
   * /_peekd/admin/v1/verify (every read model rebuilt from the log in the serving process and
   * compared with the live tables; its per-projection `seq`, the live checkpoint compared, is
   * also how the catch-up is checked). Used instead of `databaseUrl` and `verifyEnv`.
   */
  adminVerify?: { baseUrl: string; token: string };
  /** How long the projections get to catch up with the log (default 30 s). */
  catchUpMs?: number;
}

export interface CheckReport {
  violations: Violation[];
  counts: LoadCounts;
  log: { peeksEnvelopes: number; roomsEnvelopes: number; peekEvents: number; roomEvents: number };
  /** `peekd verify` (code: its exit code) or the admin API (code 0: every read model equal, 1: not, null: no answer). */
  verify?: { code: number | null; output: string; durationMs: number; via: 'peekd verify' | 'admin API' };
  /** How long after the check began every read model had reached the end of its stream (undefined: not checked or never). */
  projectionsCaughtUpMs?: number;
}

const isMatrixError = (body: unknown): boolean =>
  !!body && typeof body === 'object' && typeof (body as { errcode?: unknown }).errcode === 'string' && typeof (body as { error?: unknown }).error === 'string';

/** The envelopes whose command ID is the request's: `<rid>` or `<rid>.N`. */
function ofRequest<E>(byCommand: Map<string, LoggedEnvelope<E>[]>, rid: string): LoggedEnvelope<E>[] {
  const out = [...(byCommand.get(rid) ?? [])];
  for (const [id, envs] of byCommand) if (id.startsWith(`${rid}.`) && /^\d+$/.test(id.slice(rid.length + 1))) out.push(...envs);
  return out;
}

function byCommandId<E>(envs: LoggedEnvelope<E>[]): Map<string, LoggedEnvelope<E>[]> {
  const m = new Map<string, LoggedEnvelope<E>[]>();
  for (const e of envs) if (e.commandId !== undefined) m.set(e.commandId, [...(m.get(e.commandId) ?? []), e]);
  return m;
}

const deviceKey = (room: string, userId: string, deviceId: string) => `${room}\u0000${peekKey({ kind: 'device', userId, deviceId })}`;

/**
 * After the run (load stopped, cluster healthy):
 *  a. no 5xx but 503, no request past the bound (client timeout or network error), every 503
 *     with Retry-After and a Matrix {errcode, error} body;
 *  b. every 200 peek / unpeek / send has its command ID (X-Request-Id, or `<rid>.N`) in exactly
 *     one envelope of the stream it must append to, and that envelope holds what the answer
 *     says (a start or renewal of that device's peek; its end; the event_id); a repeated send
 *     answered from an earlier attempt's envelope (same txnId) may name that one instead. No
 *     command ID appears in two envelopes of one stream, globally;
 *  c. every event_id a send returned appears exactly once in ROOMS;
 *  d. per (room, device): the peek state folded from PEEKS (well-formed: no start while live,
 *     no renewal or end while not) agrees with the last command that answered definitively
 *     (200 peek: peeking; 200 unpeek or 400 M_BAD_STATE unpeek: not), commands that could not
 *     have applied (other 4xx) skipped; a device whose last command answered 503 or nothing is
 *     exempt; a device with a timed_out expiry is exempt (lifetimes are long: reported);
 *  e. every read model's checkpoint reaches the end of its stream, and `peekd verify` exits 0
 *     (without Postgres: POST /_peekd/admin/v1/verify on the serving peekd answers equal, at
 *     checkpoints that reached the end of the streams);
 *  f. no unexpected 4xx.
 */
export async function checkInvariants(opts: CheckOptions): Promise<CheckReport> {
  const { records } = opts;
  const violations: Violation[] = [];
  const v = (invariant: Invariant, message: string, requestId?: string) => violations.push({ invariant, message, ...(requestId ? { requestId } : {}) });
  const what = (r: LoadRecord) => `${r.kind} ${r.room} by ${r.userId}/${r.deviceId}${r.txnId ? ` txn ${r.txnId}` : ''} (X-Request-Id ${r.requestId ?? 'none'})`;

  // --- a, f: answers --------------------------------------------------------------------
  for (const r of records) {
    if (r.status === 0) v('a', `${what(r)}: no answer within the bound (${opts.boundMs} ms)`, r.requestId);
    else if (r.status === -1) v('a', `${what(r)}: ${r.error}`, r.requestId);
    else if (r.latencyMs > opts.boundMs) v('a', `${what(r)}: answered ${r.status} after ${Math.round(r.latencyMs)} ms, past the bound ${opts.boundMs} ms`, r.requestId);
    if (r.status >= 500 && r.status !== 503) v('a', `${what(r)}: ${r.status} ${JSON.stringify(r.body)}`, r.requestId);
    if (r.status === 503) {
      if (!r.retryAfter || !/^\d+$/.test(r.retryAfter)) v('a', `${what(r)}: 503 without a Retry-After header (got ${JSON.stringify(r.retryAfter)})`, r.requestId);
      if (!isMatrixError(r.body)) v('a', `${what(r)}: 503 body is not a Matrix error: ${JSON.stringify(r.body)}`, r.requestId);
    }
    if (r.status > 0 && !r.requestId) v('a', `${what(r)}: answered ${r.status} without an X-Request-Id header`);
    if (r.status >= 400 && r.status < 500) {
      const expected = r.kind === 'unpeek' && r.status === 400 && r.errcode === 'M_BAD_STATE';
      if (!expected) v('f', `${what(r)}: ${r.status} ${JSON.stringify(r.body)}`, r.requestId);
    }
  }

  // --- the log ------------------------------------------------------------------------------
  const naming = new Naming(opts.prefix, opts.shards);
  const nc = await connect({ servers: opts.natsUrls, name: 'failover-checker', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  let contents: StreamContents;
  try {
    contents = {
      peeks: await readWholeStream<PeekEvent>(nc, naming, 'peeks'),
      rooms: await readWholeStream<RoomEvent>(nc, naming, 'rooms'),
    };
  } finally {
    await nc.close();
  }
  const peeksBy = byCommandId(contents.peeks);
  const roomsBy = byCommandId(contents.rooms);
  for (const [kind, by] of [
    ['PEEKS', peeksBy],
    ['ROOMS', roomsBy],
  ] as const) {
    for (const [id, envs] of by as Map<string, LoggedEnvelope<unknown>[]>) {
      if (envs.length > 1) v('b', `command ${id} is in ${envs.length} envelopes of ${kind} (seqs ${envs.map((e) => e.seq).join(', ')})`, id.replace(/\.\d+$/, ''));
    }
  }
  const roomEventsById = new Map<string, { seq: number; commandId?: string }[]>();
  for (const env of contents.rooms) {
    for (const e of env.events) if (e) roomEventsById.set(e.eventId, [...(roomEventsById.get(e.eventId) ?? []), { seq: env.seq, commandId: env.commandId }]);
  }

  // --- b, c: every 200 that must append -----------------------------------------------------
  const attemptsOfTxn = new Map<string, Set<string>>();
  for (const r of records) if (r.kind === 'send' && r.txnId && r.requestId) attemptsOfTxn.set(r.txnId, (attemptsOfTxn.get(r.txnId) ?? new Set()).add(r.requestId));
  for (const r of records) {
    if (r.status !== 200) continue;
    if (!r.requestId) continue; // reported under a
    if (r.kind === 'send') {
      const eventId = (r.body as { event_id?: unknown })?.event_id;
      if (typeof eventId !== 'string') {
        v('b', `${what(r)}: 200 without an event_id: ${JSON.stringify(r.body)}`, r.requestId);
        continue;
      }
      const placed = roomEventsById.get(eventId) ?? [];
      if (placed.length !== 1) v('c', `${what(r)}: event ${eventId} is ${placed.length} times in ROOMS${placed.length ? ` (seqs ${placed.map((p) => p.seq).join(', ')})` : ''}`, r.requestId);
      const own = ofRequest(roomsBy, r.requestId);
      if (own.length === 1) {
        if (!own[0]!.events.some((e) => e?.eventId === eventId)) v('b', `${what(r)}: its ROOMS envelope (seq ${own[0]!.seq}) does not hold ${eventId}`, r.requestId);
      } else if (own.length === 0) {
        // A repeated send may be answered from an earlier attempt of the same txnId.
        const earlier = attemptsOfTxn.get(r.txnId!) ?? new Set();
        const from = placed[0]?.commandId;
        const fromEarlier = from !== undefined && [...earlier].some((rid) => from === rid || from.startsWith(`${rid}.`));
        if (!fromEarlier)
          v('b', `${what(r)}: answered 200 but no ROOMS envelope has its command ID (event ${eventId} is in ${placed.length ? `the envelope of command ${from}` : 'none'})`, r.requestId);
      } else {
        v('b', `${what(r)}: ${own.length} ROOMS envelopes have its command ID`, r.requestId);
      }
      if (ofRequest(peeksBy, r.requestId).length > 0) v('b', `${what(r)}: a send has PEEKS envelopes`, r.requestId);
    } else {
      const own = ofRequest(peeksBy, r.requestId);
      if (own.length !== 1) {
        v('b', `${what(r)}: answered 200 but ${own.length} PEEKS envelopes have its command ID${own.length ? ` (seqs ${own.map((e) => e.seq).join(', ')})` : ''}`, r.requestId);
        continue;
      }
      const mine = own[0]!.events.filter((e): e is PeekEvent => !!e && e.roomId === r.room && e.peek.kind === 'device' && e.peek.userId === r.userId && e.peek.deviceId === r.deviceId);
      const ok = r.kind === 'peek' ? mine.some((e) => e.type === 'PeekStarted' || e.type === 'PeekRenewed') : mine.some((e) => e.type === 'PeekExpired' && e.reason === 'unpeeked');
      if (!ok)
        v(
          'b',
          `${what(r)}: its PEEKS envelope (seq ${own[0]!.seq}) holds ${JSON.stringify(own[0]!.events.map((e) => e?.type))}, not the ${r.kind === 'peek' ? 'start or renewal' : 'end'} of this device's peek`,
          r.requestId,
        );
      if (ofRequest(roomsBy, r.requestId).length > 0) v('b', `${what(r)}: a ${r.kind} has ROOMS envelopes`, r.requestId);
    }
  }

  // --- d: final peek state per (room, device) ---------------------------------------------
  const folded = new Map<string, { live: boolean; timedOut: boolean; history: string[] }>();
  for (const env of contents.peeks) {
    for (const e of env.events) {
      if (!e || e.peek.kind !== 'device') continue;
      const k = deviceKey(e.roomId, e.peek.userId, e.peek.deviceId);
      const s = folded.get(k) ?? { live: false, timedOut: false, history: [] };
      s.history.push(`${env.seq}:${e.type}${e.type === 'PeekExpired' ? `(${e.reason})` : ''}${env.commandId ? `[${env.commandId}]` : ''}`);
      if (e.type === 'PeekStarted' && s.live) v('d', `${e.peek.userId}/${e.peek.deviceId} in ${e.roomId}: PeekStarted at seq ${env.seq} while a peek is live`, env.commandId);
      if (e.type !== 'PeekStarted' && !s.live) v('d', `${e.peek.userId}/${e.peek.deviceId} in ${e.roomId}: ${e.type} at seq ${env.seq} while no peek is live`, env.commandId);
      s.live = e.type !== 'PeekExpired';
      if (e.type === 'PeekExpired' && e.reason === 'timed_out') s.timedOut = true;
      folded.set(k, s);
    }
  }
  const perDevice = new Map<string, LoadRecord[]>();
  for (const r of records) {
    if (r.kind === 'send') continue;
    const k = deviceKey(r.room, r.userId, r.deviceId);
    perDevice.set(k, [...(perDevice.get(k) ?? []), r]);
  }
  for (const [k, rs] of perDevice) {
    rs.sort((a, b) => a.index - b.index); // one worker per device: issue order
    let expected: boolean | undefined;
    let because: LoadRecord | undefined;
    for (let i = rs.length - 1; i >= 0; i--) {
      const r = rs[i]!;
      if (r.status === 200) expected = r.kind === 'peek';
      else if (r.kind === 'unpeek' && r.status === 400 && r.errcode === 'M_BAD_STATE') expected = false;
      else if (r.status >= 400 && r.status < 500) continue; // refused: did not apply
      // else 503, a timeout or a network error: may or may not have applied, exempt
      because = r;
      break;
    }
    if (expected === undefined || !because) continue;
    const s = folded.get(k) ?? { live: false, timedOut: false, history: [] };
    if (s.timedOut) {
      v('d', `${because.userId}/${because.deviceId} in ${because.room}: a peek timed out although PEEKD_PEEK_LIFETIME_MS is long (${s.history.join(' ')})`, because.requestId);
      continue;
    }
    if (s.live !== expected) {
      v(
        'd',
        `${because.userId}/${because.deviceId} in ${because.room}: last definitive command ${because.kind} answered ${because.status}${because.errcode ? ` ${because.errcode}` : ''} (X-Request-Id ${because.requestId}) implies ${expected ? 'peeking' : 'not peeking'}, the log says ${s.live ? 'peeking' : 'not peeking'}; log: ${s.history.join(' ') || '(nothing)'}`,
        because.requestId,
      );
    }
  }

  // --- e: projections ---------------------------------------------------------------------
  let verify: CheckReport['verify'];
  let projectionsCaughtUpMs: number | undefined;
  if (opts.databaseUrl) {
    const waitStarted = Date.now();
    const lastSeq = {
      peeks: contents.peeks.at(-1)?.seq ?? 0,
      rooms: contents.rooms.at(-1)?.seq ?? 0,
    };
    const behind = await waitForCheckpoints(opts.databaseUrl, { peeks: throughSeq(lastSeq.peeks), rooms: throughSeq(lastSeq.rooms) }, opts.catchUpMs ?? 30_000);
    if (behind.length === 0) projectionsCaughtUpMs = Date.now() - waitStarted;
    for (const b of behind) v('e', `projection ${b.projection} is at ${b.seq} of ${b.want} (${b.stream}) ${opts.catchUpMs ?? 30_000} ms after the load stopped`);
  }
  if (opts.verifyEnv) {
    verify = { ...(await runPeekdVerify(opts.verifyEnv)), via: 'peekd verify' };
    if (verify.code !== 0) v('e', `peekd verify exited ${verify.code}:\n${verify.output.trim()}`);
  }
  if (opts.adminVerify) {
    const want = { peeks: throughSeq(contents.peeks.at(-1)?.seq ?? 0), rooms: throughSeq(contents.rooms.at(-1)?.seq ?? 0) };
    const r = await adminVerifyCaughtUp(opts.adminVerify, want, opts.catchUpMs ?? 30_000);
    verify = { code: r.error ? null : r.equal ? 0 : 1, output: r.output, durationMs: r.durationMs, via: 'admin API' };
    if (r.caughtUpMs !== undefined) projectionsCaughtUpMs = r.caughtUpMs;
    if (r.error) v('e', `POST /_peekd/admin/v1/verify: ${r.error}`);
    else {
      for (const b of r.behind) v('e', `projection ${b.projection} is at ${b.seq} of ${b.want} (${b.stream}) ${opts.catchUpMs ?? 30_000} ms after the load stopped (admin verify)`);
      if (!r.equal) v('e', `POST /_peekd/admin/v1/verify: the read models differ from a rebuild:\n${r.output.trim()}`);
    }
  }

  return {
    violations,
    counts: countRecords(records),
    log: {
      peeksEnvelopes: contents.peeks.length,
      roomsEnvelopes: contents.rooms.length,
      peekEvents: contents.peeks.reduce((n, e) => n + e.events.length, 0),
      roomEvents: contents.rooms.reduce((n, e) => n + e.events.length, 0),
    },
    ...(verify ? { verify } : {}),
    ...(projectionsCaughtUpMs !== undefined ? { projectionsCaughtUpMs } : {}),
  };
}

/** Polls projection_checkpoints until every read model reached `want` of its stream; returns those still behind. */
async function waitForCheckpoints(databaseUrl: string, want: { peeks: number; rooms: number }, withinMs: number): Promise<{ projection: string; stream: string; seq: number; want: number }[]> {
  const { default: postgres } = await import('postgres');
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  const models = readModels('all');
  const deadline = Date.now() + withinMs;
  try {
    for (;;) {
      const rows = await sql<{ projection: string; stream: string; seq: string }[]>`select projection, stream, seq::text as seq from projection_checkpoints`;
      const at = new Map(rows.map((r) => [`${r.projection}\u0000${r.stream}`, Number(r.seq)]));
      const behind = models
        .map((p) => ({ projection: p.name, stream: p.stream, seq: at.get(`${p.name}\u0000${p.stream}`) ?? 0, want: want[p.stream as 'peeks' | 'rooms'] }))
        .filter((b) => b.seq < b.want);
      if (behind.length === 0 || Date.now() > deadline) return behind;
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await sql.end();
  }
}

/**
 * POST /_peekd/admin/v1/verify until every read model's compared checkpoint (`seq`) reached
 * `want` of its stream, or `withinMs` passed. The last answer decides equality; `behind` lists
 * the read models that never caught up.
 */
async function adminVerifyCaughtUp(
  admin: { baseUrl: string; token: string },
  want: { peeks: number; rooms: number },
  withinMs: number,
): Promise<{ equal: boolean; behind: { projection: string; stream: string; seq: number; want: number }[]; output: string; durationMs: number; caughtUpMs?: number; error?: string }> {
  assertLoopback(admin.baseUrl);
  const started = Date.now();
  const deadline = started + withinMs;
  const streamOf = new Map(readModels('all').map((p) => [p.name, p.stream as 'peeks' | 'rooms']));
  for (let attempt = 1; ; attempt++) {
    const a = await call(admin.baseUrl, 'POST', '/_peekd/admin/v1/verify', { token: admin.token, timeoutMs: 120_000 });
    const body = a.body as { equal?: unknown; projections?: VerifyResult[] } | undefined;
    if (a.status !== 200 || typeof body?.equal !== 'boolean' || !Array.isArray(body.projections)) {
      return { equal: false, behind: [], output: '', durationMs: Date.now() - started, error: `answered ${a.status} ${a.error ?? ''} ${JSON.stringify(a.body)}` };
    }
    const results = body.projections;
    const missing = [...streamOf.keys()].filter((n) => !results.some((r) => r.projection === n));
    if (missing.length > 0) return { equal: false, behind: [], output: '', durationMs: Date.now() - started, error: `the answer lacks read models ${missing.join(', ')}` };
    const behind = results.map((r) => ({ projection: r.projection, stream: streamOf.get(r.projection)!, seq: Number(r.seq), want: want[streamOf.get(r.projection)!] })).filter((b) => b.seq < b.want);
    const output = `${results.map(formatVerify).join('\n')}\n(${attempt} verify call${attempt > 1 ? 's' : ''})`;
    if (behind.length === 0) return { equal: body.equal, behind, output, durationMs: Date.now() - started, caughtUpMs: Date.now() - started };
    if (Date.now() > deadline) return { equal: body.equal, behind, output, durationMs: Date.now() - started };
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** `node bin/peekd.mjs verify` in a child process with `env` (and none of this process's PEEKD_/NATS/DATABASE settings). */
export function runPeekdVerify(env: Record<string, string>, timeoutMs = 120_000): Promise<{ code: number | null; output: string; durationMs: number }> {
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [k, val] of Object.entries(process.env)) if (!/^(VITEST|NODE_OPTIONS|PEEKD_|DATABASE_URL|NATS_URL)/.test(k)) childEnv[k] = val;
  Object.assign(childEnv, env);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/peekd.mjs', 'verify'], { cwd: REPO, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[killed: verify took longer than ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output, durationMs: Date.now() - started });
    });
  });
}

/** Violations as text, each with the log lines that mention its request ID. */
export function formatViolations(violations: readonly Violation[], logLines: readonly { source: string; lines: readonly string[] }[] = [], max = 40): string {
  const out: string[] = [];
  for (const x of violations.slice(0, max)) {
    out.push(`[${x.invariant}] ${x.message}`);
    if (x.requestId) {
      for (const { source, lines } of logLines) {
        for (const l of lines.filter((l) => l.includes(x.requestId!)).slice(0, 6)) out.push(`    ${source}: ${l.length > 1500 ? `${l.slice(0, 1500)}…` : l}`);
      }
    }
  }
  if (violations.length > max) out.push(`… and ${violations.length - max} more`);
  return out.join('\n');
}
