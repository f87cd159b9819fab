// The request a command belongs to: every command an HTTP request sends takes its command
// ID from the request ID (`<request id>`, then `<request id>.2`, …), so a 200 answer can be
// traced to exactly the envelopes it wrote, and the ID an operator sees in the X-Request-Id
// header and the logs is the one in the log's envelopes. Handlers pass it explicitly (an
// AsyncLocalStorage would carry it implicitly, but turns on promise hooks that cost every
// promise in the process ~8% of a busy server's throughput).
const sent = new WeakMap<object, number>();

/** The command ID for the next command `req` sends. */
export function commandIdFor(req: { id: string }): string {
  const n = (sent.get(req) ?? 0) + 1;
  sent.set(req, n);
  return n === 1 ? req.id : `${req.id}.${n}`;
}
