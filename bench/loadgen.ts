// The bench's client side, in its own process (it never shares peekd's event loop):
// autocannon for the HTTP command load, raw JetStream publishers for the ceilings, a
// small keep-alive HTTP client for registrations and thousands of long-polling /sync
// requests, the signature-verification micro-benchmark and the rebuild scenario's work.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { jetstream } from '@nats-io/jetstream';
import { Naming } from '../src/events/subjects.ts';
import { connectNats } from '../src/nats/connection.ts';
import { deleteStreams, ensureStreams } from '../src/nats/streams.ts';
import { commonHandlers, nowNs, pool } from './childCommon.ts';
import { serveIpc } from './ipc.ts';
import * as rebuild from './rebuildOps.ts';
import { verifyBench } from './verifyOps.ts';

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1_000_000, keepAliveMsecs: 10_000 });
const enc = encodeURIComponent;

interface HttpResult {
  status: number;
  text: string;
  /** hrtime (ns) when the response's head arrived. */
  head: bigint;
  /** hrtime (ns) when the whole response had arrived. */
  end: bigint;
}

function request(base: string, method: string, path: string, token?: string, body?: unknown, timeoutMs = 600_000): Promise<HttpResult> {
  const url = new URL(path, base);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        method,
        path: url.pathname + url.search,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const head = process.hrtime.bigint();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), head, end: process.hrtime.bigint() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

async function ok(base: string, method: string, path: string, token?: string, body?: unknown): Promise<any> {
  const r = await request(base, method, path, token, body);
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
  return JSON.parse(r.text);
}

// --- long-polling devices ------------------------------------------------------------------

interface Poller {
  token: string;
  since: string;
  inflight: boolean;
  /** hrtime of responses that carried new peek timeline events, not yet taken. */
  arrivals: bigint[];
}

const polls = {
  url: '',
  timeoutMs: 120_000,
  stopped: false,
  list: [] as Poller[],
  errors: 0,
  lastError: '',
  /** The body of the latest response that carried new timeline events. */
  sample: null as string | null,
};

function fire(i: number): void {
  const p = polls.list[i]!;
  if (polls.stopped || p.inflight) return;
  p.inflight = true;
  request(polls.url, 'GET', `/_matrix/client/v3/sync?since=${enc(p.since)}&timeout=${polls.timeoutMs}`, p.token, undefined, polls.timeoutMs + 60_000).then(
    (r) => {
      p.inflight = false;
      if (r.status === 200) {
        const body = JSON.parse(r.text) as { next_batch: string; rooms?: { peek?: Record<string, { timeline?: { events?: unknown[] } }> } };
        const woken = Object.values(body.rooms?.peek ?? {}).some((s) => (s.timeline?.events?.length ?? 0) > 0);
        if (woken) {
          p.arrivals.push(r.head);
          polls.sample = r.text;
        }
        p.since = body.next_batch;
      } else {
        polls.errors++;
        polls.lastError = `${r.status} ${r.text.slice(0, 200)}`;
      }
      // A real client asks again at once; after this turn of the event loop, so the other
      // answers that arrived with this one are timestamped before any new request is built.
      setImmediate(() => fire(i));
    },
    (err: Error) => {
      p.inflight = false;
      polls.errors++;
      polls.lastError = err.message;
      setTimeout(() => fire(i), 100);
    },
  );
}

// --- raw JetStream publishes: the ceiling of the command scenarios ------------------------------

interface RawPublishArgs {
  natsUrl: string;
  prefix: string;
  /** Room IDs: one subject each, named as peekd names them. */
  rooms: string[];
  concurrency: number;
  payloadBytes: number;
  durationMs: number;
  warmupMs?: number;
}

/**
 * `concurrency` publishers, each awaiting its ack before the next publish, every publish
 * with a Nats-Msg-Id and the expected last subject sequence — what a room actor's append
 * sends — into a stream created exactly like peekd's PEEKS stream.
 */
async function rawPublish(args: RawPublishArgs) {
  const nc = await connectNats(args.natsUrl, 'peekd-bench-raw');
  const naming = new Naming(args.prefix, 64);
  await ensureStreams(nc, naming);
  try {
    const js = jetstream(nc);
    const subjects = args.rooms.map((r) => naming.roomSubject('peeks', r));
    const last = new Array<number>(subjects.length).fill(0);
    const payload = new Uint8Array(Buffer.alloc(args.payloadBytes, 'x'));
    const run = randomBytes(4).toString('hex');
    let k = 0;
    let n = 0;
    let measuring = false;
    const lat: number[] = [];
    const phase = async (ms: number) => {
      const end = Date.now() + ms;
      await Promise.all(
        Array.from({ length: args.concurrency }, async () => {
          while (Date.now() < end) {
            const s = k++ % subjects.length;
            const t = process.hrtime.bigint();
            const ack = await js.publish(subjects[s]!, payload, { msgID: `${run}:${k}`, expect: { lastSubjectSequence: last[s]! } });
            last[s] = ack.seq;
            if (measuring) {
              lat.push(Number(process.hrtime.bigint() - t) / 1e6);
              n++;
            }
          }
        }),
      );
    };
    await phase(args.warmupMs ?? 1000);
    measuring = true;
    const t0 = process.hrtime.bigint();
    await phase(args.durationMs);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    lat.sort((a, b) => a - b);
    const pct = (p: number) => lat[Math.min(lat.length - 1, Math.max(0, Math.ceil((p / 100) * lat.length) - 1))] ?? NaN;
    return { publishes: n, seconds, perSecond: n / seconds, p50: pct(50), p99: pct(99) };
  } finally {
    await deleteStreams(nc, naming).catch(() => undefined);
    await nc.drain();
  }
}

// --- autocannon: peek / renew / unpeek through HTTP ------------------------------------------------

interface CycleArgs {
  url: string;
  rooms: string[];
  tokens: string[];
  connections: number;
  durationS: number;
}

/**
 * Every connection loops: POST /peek (start), POST /peek again (renew), POST /unpeek, on
 * the next room of a shared round-robin over `rooms`, as the next device of `tokens`.
 */
async function peekCycle(args: CycleArgs) {
  let k = 0;
  const json = { 'content-type': 'application/json' };
  type Ctx = { room?: string; auth?: string };
  type Req = { path?: string; headers?: Record<string, string>; body?: string; method?: string };
  const peekReq = (req: Req, ctx: Ctx): Req => ({ ...req, method: 'POST', path: `/_matrix/client/v3/peek/${enc(ctx.room!)}`, headers: { ...json, authorization: ctx.auth! }, body: '{}' });
  const requests = [
    {
      setupRequest: (req: Req, ctx: Ctx) => {
        const i = k++;
        ctx.room = args.rooms[i % args.rooms.length]!;
        ctx.auth = `Bearer ${args.tokens[i % args.tokens.length]!}`;
        return peekReq(req, ctx);
      },
    },
    { setupRequest: (req: Req, ctx: Ctx) => peekReq(req, ctx) },
    {
      setupRequest: (req: Req, ctx: Ctx): Req => ({ ...req, method: 'POST', path: `/_matrix/client/v3/rooms/${enc(ctx.room!)}/unpeek`, headers: { ...json, authorization: ctx.auth! }, body: '{}' }),
    },
  ];
  const result = await autocannon({
    url: args.url,
    connections: args.connections,
    duration: args.durationS,
    timeout: 30,
    requests: requests as never,
  });
  const r = result as unknown as {
    duration: number;
    '2xx': number;
    non2xx: number;
    errors: number;
    timeouts: number;
    requests: { total: number; average: number };
    latency: { p50: number; p99: number; p90: number; average: number; max: number };
    statusCodeStats?: Record<string, { count: number }>;
  };
  return {
    seconds: r.duration,
    ok: r['2xx'],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    total: r.requests.total,
    perSecond: r['2xx'] / r.duration,
    latency: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, mean: r.latency.average, max: r.latency.max },
    statusCodes: Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([k2, v]) => [k2, v.count])),
  };
}

serveIpc({
  ...commonHandlers(async () => {
    polls.stopped = true;
    await rebuild.cleanup();
    agent.destroy();
  }),

  /** Registers `count` users (one device each, no password: no scrypt); returns their sessions. */
  register: async ({ url, count, prefix, concurrency = 32 }: { url: string; count: number; prefix: string; concurrency?: number }) => {
    const ids = Array.from({ length: count }, (_, i) => i);
    return pool(ids, concurrency, async (i) => {
      const b = await ok(url, 'POST', '/_matrix/client/v3/register', undefined, { username: `${prefix}${i}`, auth: { type: 'm.login.dummy' } });
      return { userId: b.user_id as string, deviceId: b.device_id as string, token: b.access_token as string };
    });
  },

  /** Many requests with bounded concurrency; returns the status counts and the last error. */
  bulk: async ({ url, requests, concurrency = 32 }: { url: string; requests: { method: string; path: string; token?: string; body?: unknown }[]; concurrency?: number }) => {
    const statuses: Record<string, number> = {};
    let lastError = '';
    await pool(requests, concurrency, async (r) => {
      const res = await request(url, r.method, r.path, r.token, r.body);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status !== 200) lastError = res.text.slice(0, 300);
    });
    return { statuses, lastError };
  },

  get: ({ url, path, token }: { url: string; path: string; token?: string }) => ok(url, 'GET', path, token),

  peekCycle,
  rawPublish,

  pollInit: ({ url, tokens, since, timeoutMs }: { url: string; tokens: string[]; since: string; timeoutMs: number }) => {
    polls.url = url;
    polls.timeoutMs = timeoutMs;
    polls.stopped = false;
    polls.list = tokens.map((token) => ({ token, since, inflight: false, arrivals: [] }));
    return polls.list.length;
  },
  /** Sets where devices [from, to) start from (before they are armed). */
  pollSince: ({ from, to, since }: { from: number; to: number; since: string }) => {
    for (let i = from; i < Math.min(to, polls.list.length); i++) if (!polls.list[i]!.inflight) polls.list[i]!.since = since;
    return true;
  },
  /** Starts the long-polls of devices [from, to) (they re-poll on their own from then on). */
  pollArm: ({ from, to }: { from: number; to: number }) => {
    for (let i = from; i < Math.min(to, polls.list.length); i++) fire(i);
    return true;
  },
  pollState: () => ({
    inflight: polls.list.filter((p) => p.inflight).length,
    withArrival: polls.list.filter((p) => p.arrivals.length > 0).length,
    errors: polls.errors,
    lastError: polls.lastError,
    now: nowNs(),
  }),
  /** The first arrival of each device since the last take (hrtime ns strings), and clears them. */
  pollTake: ({ from = 0, to = Infinity }: { from?: number; to?: number }) => {
    const out: (string | null)[] = [];
    for (let i = from; i < Math.min(to, polls.list.length); i++) {
      const p = polls.list[i]!;
      out.push(p.arrivals[0]?.toString() ?? null);
      p.arrivals = [];
    }
    return out;
  },
  /** The body of the latest /sync answer that carried new timeline events (null if none yet). */
  pollSample: () => polls.sample,
  pollStop: () => {
    polls.stopped = true;
    return true;
  },

  verifyBench,

  rebuildGenerate: rebuild.generate,
  rebuildRawRead: rebuild.rawRead,
  rebuildRawInsert: rebuild.rawInsert,
  rebuildReplay: rebuild.replay,
  rebuildCleanup: rebuild.cleanup,
});
