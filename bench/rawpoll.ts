// The wake-up scenario's ceiling, in its own process: the most direct long-poll server
// node:http allows. GET /sync?since=<token> waits while `since` is the current token and
// answers at once otherwise; `wake` moves the token on and answers every waiting request
// with the same prepared bytes, in one synchronous loop — no routing, authentication,
// computation or slicing. The same load generator long-polls it as it long-polls peekd, so
// the ratio says how much of the wake-up's time peekd adds to what the machine, Node's
// HTTP and the clients cost by themselves.
import http from 'node:http';
import { freePort } from '../src/nats/freePorts.ts';
import { commonHandlers, nowNs } from './childCommon.ts';
import { serveIpc } from './ipc.ts';

let token = 0;
let body = Buffer.from(JSON.stringify({ next_batch: '0' }));
let waiting: http.ServerResponse[] = [];
let server: http.Server | undefined;

function answer(res: http.ServerResponse, bytes: Buffer): void {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
  res.end(bytes);
}

serveIpc({
  ...commonHandlers(async () => {
    for (const res of waiting) res.destroy();
    server?.close();
  }),
  /** Listens on a free loopback port; returns its base URL. */
  listen: async () => {
    const port = await freePort();
    server = http.createServer({ keepAliveTimeout: 600_000 }, (req, res) => {
      const since = new URL(req.url ?? '/', 'http://x').searchParams.get('since');
      if (since === String(token)) waiting.push(res);
      else answer(res, body);
    });
    server.headersTimeout = 0;
    server.requestTimeout = 0;
    await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve));
    return `http://127.0.0.1:${port}`;
  },
  waiting: () => waiting.length,
  /** The current token: a long-poll with it as `since` waits. */
  token: () => String(token),
  /**
   * The next token, and `template` (a /sync answer as peekd sent it) with that token as
   * `next_batch`, written to every waiting request. Returns the hrtime (ns) before the first write.
   */
  wake: ({ template }: { template: string }) => {
    const tAck = nowNs();
    token++;
    body = Buffer.from(JSON.stringify({ ...(JSON.parse(template) as object), next_batch: String(token) }));
    const ready = waiting;
    waiting = [];
    for (const res of ready) answer(res, body);
    return tAck;
  },
});
