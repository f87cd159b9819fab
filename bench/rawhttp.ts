// The command scenarios' HTTP floor, in its own process: what the same peek / renew / unpeek
// requests cost in HTTP alone. Two servers answer them with a small JSON body and do
// nothing else: a bare `node:http` server (read the body, parse it, write the answer), and
// Fastify with the plugins and per-request hooks peekd has on these routes (CORS, the
// per-device rate limit keyed by the access token, a request ID header, JSON bodies). The
// same load generator drives them as it drives peekd; their CPU per request against
// peekd's CPU per command says how much of peekd's time is HTTP that any server pays.
//
// A third server adds the one thing every command must do besides HTTP: a bare `node:http`
// server that appends each request to JetStream (one publish with the expected last
// subject sequence of the request's room, a payload of the size of a peek event, through
// peekd's own NATS connection settings and append publisher, src/nats/appendAcks.ts) and
// answers after the ack. Nothing else: no auth, no actor,
// no projection reads the stream back. What it reaches is the most any server that writes
// each command to the log can reach on this machine under this load.
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance } from 'fastify';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { NatsConnection } from '@nats-io/transport-node';
import { Naming } from '../src/events/subjects.ts';
import { CORS_OPTIONS } from '../src/http/app.ts';
import { AckedPublisher } from '../src/nats/appendAcks.ts';
import { connectNats } from '../src/nats/connection.ts';
import { deleteStreams, ensureStreams } from '../src/nats/streams.ts';
import { commonHandlers } from './childCommon.ts';
import { serveIpc } from './ipc.ts';

let bare: http.Server | undefined;
let app: FastifyInstance | undefined;
let appending: { server: http.Server; nc: NatsConnection; naming: Naming } | undefined;

/**
 * How both bare servers take a request: read and parse the JSON body, then `answer` the
 * room it names (after `before`, when there is one) with the body peekd would send.
 */
function bareHandler(before?: (roomId: string) => Promise<void>): http.RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as object;
      const parts = req.url?.split('/') ?? [];
      const unpeek = parts.at(-1) === 'unpeek';
      const roomId = decodeURIComponent((unpeek ? parts.at(-2) : parts.at(-1)) ?? '');
      const answer = () => {
        const out = JSON.stringify(unpeek ? { ...body } : { room_id: roomId, peek_expiry_ts: Date.now() + 3_600_000 });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
        res.end(out);
      };
      if (!before) return answer();
      before(roomId).then(answer, (err: Error) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errcode: 'M_UNKNOWN', error: err.message }));
      });
    });
  };
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as { port: number }).port}`)));
}

function listenBare(): Promise<string> {
  bare = http.createServer({ keepAliveTimeout: 600_000 }, bareHandler());
  return listen(bare);
}

/** The bare server, appending each request to JetStream before it answers. */
async function listenAppending(natsUrl: string, prefix: string, payloadBytes: number): Promise<string> {
  const nc = await connectNats(natsUrl, 'peekd-bench-floor');
  const naming = new Naming(prefix, 64);
  await ensureStreams(nc, naming);
  // peekd's own publisher for appends (one map entry and one message per append).
  const acks = new AckedPublisher(nc);
  const payload = new Uint8Array(Buffer.alloc(payloadBytes, 'x'));
  /** Per room subject: its last sequence, and the append in flight (one at a time per room, as an actor does). */
  const rooms = new Map<string, { last: number; tail: Promise<void> }>();
  let n = 0;
  const append = (roomId: string): Promise<void> => {
    const subject = naming.roomSubject('peeks', roomId);
    let room = rooms.get(subject);
    if (!room) rooms.set(subject, (room = { last: 0, tail: Promise.resolve() }));
    const r = room;
    // A failed append fails its own request only; the room's next append goes on.
    r.tail = r.tail
      .catch(() => undefined)
      .then(async () => {
        const ack = await acks.publish(subject, payload, `${prefix}${++n}`, r.last);
        r.last = ack.seq;
      });
    return r.tail;
  };
  const server = http.createServer({ keepAliveTimeout: 600_000 }, bareHandler(append));
  appending = { server, nc, naming };
  return listen(server);
}

/** Closes the appending server and deletes its streams (at exit). */
async function closeAppending(): Promise<void> {
  if (!appending) return;
  const { server, nc, naming } = appending;
  appending = undefined;
  server.close();
  await deleteStreams(nc, naming).catch(() => undefined);
  await nc.drain();
}

async function listenFastify(): Promise<string> {
  app = Fastify({ genReqId: () => randomUUID(), routerOptions: { maxParamLength: 500, ignoreTrailingSlash: true } });
  app.addHook('onRequest', (req, reply, done) => {
    reply.header('X-Request-Id', req.id);
    done();
  });
  await app.register(cors, CORS_OPTIONS);
  await app.register(rateLimit, { global: false });
  const limit = { max: 1_000_000, timeWindow: 1000, keyGenerator: (req: { headers: Record<string, unknown> }) => String(req.headers.authorization) };
  app.post('/_matrix/client/v3/peek/:room', { config: { rateLimit: limit } }, async (req) => ({ room_id: (req.params as { room: string }).room, peek_expiry_ts: Date.now() + 3_600_000 }));
  app.post('/_matrix/client/v3/rooms/:room/unpeek', async () => ({}));
  return app.listen({ port: 0, host: '127.0.0.1' });
}

serveIpc({
  ...commonHandlers(async () => {
    bare?.close();
    await app?.close();
    await closeAppending();
  }),
  /** Starts the three servers; returns their base URLs. */
  listen: async ({ natsUrl, prefix, payloadBytes }: { natsUrl: string; prefix: string; payloadBytes: number }) => ({
    bare: await listenBare(),
    fastify: await listenFastify(),
    appending: await listenAppending(natsUrl, prefix, payloadBytes),
  }),
  /** This process's CPU time so far (user + system), µs. */
  cpu: () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  },
});
