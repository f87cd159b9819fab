// The command scenarios' HTTP floor, in its own process: what the same peek / renew / unpeek
// requests cost in HTTP alone. Two servers answer them with a small JSON body and do
// nothing else: a bare `node:http` server (read the body, parse it, write the answer), and
// Fastify with the plugins and per-request hooks peekd has on these routes (CORS, the
// per-device rate limit keyed by the access token, a request ID header, JSON bodies). The
// same load generator drives them as it drives peekd; their CPU per request against
// peekd's CPU per command says how much of peekd's time is HTTP that any server pays.
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance } from 'fastify';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { CORS_OPTIONS } from '../src/http/app.ts';
import { commonHandlers } from './childCommon.ts';
import { serveIpc } from './ipc.ts';

let bare: http.Server | undefined;
let app: FastifyInstance | undefined;

function listenBare(): Promise<string> {
  bare = http.createServer({ keepAliveTimeout: 600_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as object;
      const out = JSON.stringify(req.url?.endsWith('/unpeek') ? { ...body } : { room_id: decodeURIComponent(req.url?.split('/').at(-1) ?? ''), peek_expiry_ts: Date.now() + 3_600_000 });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  return new Promise((resolve) => bare!.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(bare!.address() as { port: number }).port}`)));
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
  }),
  /** Starts both servers; returns their base URLs. */
  listen: async () => ({ bare: await listenBare(), fastify: await listenFastify() }),
  /** This process's CPU time so far (user + system), µs. */
  cpu: () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  },
});
