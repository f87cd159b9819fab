// Wall-clock accounting inside peekd's process, for the closing notes: every NATS request
// (JetStream publishes, direct gets, API calls), every Postgres statement and transaction,
// every projection commit and wait — counted and timed while a trace window is open. It
// wraps methods of peekd's live objects (the NATS connection, the database client, the
// projection runners) from the outside; nothing in src/ changes.
import type { Peekd } from '../src/server.ts';

interface Span {
  n: number;
  ms: number;
  maxMs: number;
}

const spans = new Map<string, Span>();
let on = false;

function record(name: string, t0: bigint): void {
  if (!on) return;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const s = spans.get(name) ?? { n: 0, ms: 0, maxMs: 0 };
  s.n++;
  s.ms += ms;
  if (ms > s.maxMs) s.maxMs = ms;
  spans.set(name, s);
}

type AnyFn = (...args: any[]) => any;

function timedPromise<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = process.hrtime.bigint();
  const p = fn();
  p.then(
    () => record(name, t0),
    () => record(name, t0),
  );
  return p;
}

function natsName(subject: string): string {
  if (subject.startsWith('$JS.API.DIRECT.GET')) return 'nats: JetStream direct get (lastSeq)';
  if (subject.startsWith('$JS.API.CONSUMER')) return 'nats: JetStream consumer API';
  if (subject.startsWith('$JS.API')) return 'nats: JetStream API';
  return 'nats: JetStream publish (append)';
}

/** A statement's shape: its first words, with the table it touches, quotes and spacing removed. */
function sqlShape(text: unknown): string {
  if (typeof text !== 'string') return 'statement';
  const flat = text.replace(/"/g, '').replace(/\s+/g, ' ').trim();
  const verb = flat.split(' ')[0]?.toLowerCase() ?? '';
  const table = /\b(?:from|into|update|table)\s+([a-z_.]+)/i.exec(flat)?.[1] ?? '';
  const shape = verb === 'select' ? `select … from ${table}${/ for update/i.test(flat) ? ' for update' : ''}` : `${verb} ${table}`.trim();
  return shape.length > 0 ? shape : flat.slice(0, 40);
}

/** Wraps a postgres.js / PGlite client so its statements (and transactions) are timed. */
function wrapSqlClient(client: Record<string, AnyFn>, inTx: boolean): void {
  for (const method of ['unsafe', 'query'] as const) {
    const orig = client[method];
    if (typeof orig !== 'function') continue;
    client[method] = function (this: unknown, ...args: unknown[]) {
      if (!on) return orig.apply(client, args);
      const t0 = process.hrtime.bigint();
      const q = orig.apply(client, args);
      // postgres.js queries are lazy thenables that run a microtask after .then(): the
      // caller's synchronous .values() still applies.
      if (q && typeof q.then === 'function') {
        const name = `pg${inTx ? ' (tx)' : ''}: ${sqlShape(args[0])}`;
        q.then(
          () => record(name, t0),
          () => record(name, t0),
        );
      }
      return q;
    };
  }
  for (const method of ['begin', 'transaction'] as const) {
    const orig = client[method];
    if (typeof orig !== 'function') continue;
    client[method] = function (this: unknown, ...args: unknown[]) {
      if (!on) return orig.apply(client, args);
      const fnIndex = args.findIndex((a) => typeof a === 'function');
      if (fnIndex >= 0) {
        const fn = args[fnIndex] as AnyFn;
        args[fnIndex] = (tx: Record<string, AnyFn>) => {
          wrapSqlClient(tx, true);
          return fn(tx);
        };
      }
      return timedPromise('pg: transaction (whole)', () => orig.apply(client, args));
    };
  }
}

let installed = false;

export function installTracing(peekd: Peekd): void {
  if (installed) return;
  installed = true;
  // Every hook is optional: if peekd's internals move, the trace loses that line, not the run.
  const nc = peekd.nc as unknown as Record<string, AnyFn>;
  const request = nc.request;
  if (typeof request === 'function')
    nc.request = function (subject: string, ...rest: unknown[]) {
      if (!on) return request.call(nc, subject, ...rest);
      return timedPromise(natsName(subject), () => request.call(nc, subject, ...rest));
    };
  const client = (peekd.database.db as unknown as { $client?: Record<string, AnyFn> }).$client;
  if (client) wrapSqlClient(client, false);
  for (const [name, runner] of peekd.projections) {
    const r = runner as unknown as Record<string, AnyFn>;
    const commit = r.commit;
    const waitFor = r.waitFor;
    if (typeof commit !== 'function' || typeof waitFor !== 'function') continue;
    r.commit = function (...args: unknown[]) {
      if (!on) return commit.apply(runner, args);
      return timedPromise(`projection ${name}: commit (one transaction)`, () => commit.apply(runner, args));
    };
    r.waitFor = function (seq: number) {
      if (!on) return waitFor.call(runner, seq);
      return timedPromise(`projection ${name}: a request waiting for it`, () => waitFor.call(runner, seq));
    };
  }
  const bus = peekd.bus as unknown as Record<string, AnyFn>;
  const send = bus.send;
  if (typeof send === 'function')
    bus.send = function (command: { type: string }, ...rest: unknown[]) {
      if (!on) return send.call(bus, command, ...rest);
      return timedPromise(`command bus: ${command.type} (actor mailbox + handle)`, () => send.call(bus, command, ...rest));
    };
}

export function traceStart(): void {
  spans.clear();
  on = true;
}

export interface TraceLine {
  name: string;
  n: number;
  totalMs: number;
  meanMs: number;
  maxMs: number;
}

export function traceStop(): TraceLine[] {
  on = false;
  return [...spans.entries()]
    .map(([name, s]) => ({ name, n: s.n, totalMs: Math.round(s.ms), meanMs: Math.round((s.ms / s.n) * 100) / 100, maxMs: Math.round(s.maxMs * 10) / 10 }))
    .sort((a, b) => b.totalMs - a.totalMs);
}

/** One line per span: how many per unit of work (a command, a woken device) and how long each. */
export function describeTrace(label: string, lines: TraceLine[], units: number, unitName: string, k = 10): string {
  const per = (x: number) => (x / Math.max(units, 1)).toFixed(2);
  return [
    `${label} — wall-clock trace over ${units} ${unitName}s (per ${unitName}: count × mean ms; spans overlap when work is concurrent):`,
    ...lines.slice(0, k).map((l) => `  ${l.name}: ${per(l.n)} × ${l.meanMs} ms (max ${l.maxMs} ms)`),
  ].join('\n');
}
