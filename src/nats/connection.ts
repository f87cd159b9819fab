import { connect, type NatsConnection } from '@nats-io/transport-node';

export async function connectNats(url: string, name = 'peekd'): Promise<NatsConnection> {
  const nc = await connect({
    servers: url.split(',').map((s) => s.trim()),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    // Without this the client builds an Error (capturing a stack) for every request it
    // sends, in case it later times out. Timeouts and errors still say what failed; they
    // only lose the caller's stack.
    noAsyncTraces: true,
  });
  coalesceWrites(nc);
  return nc;
}

/**
 * The client writes what is pending to the socket at the end of the microtask queue that
 * queued it. A busy server handles each HTTP request in its own I/O callback, so each
 * command's append became its own write(2): on this kind of host the largest single cost
 * of a command (a fifth of the process's CPU at 3,000 commands/s). Deferring the write to
 * the end of the event loop's poll phase (setImmediate) puts every append of the requests
 * read in one turn into one write, in the same order, for well under a millisecond of
 * added latency. Relies on the client's `protocol.flushPending` (@nats-io/nats-core 3,
 * pinned); if it is not there, nothing changes.
 */
function coalesceWrites(nc: NatsConnection): void {
  const protocol = (nc as unknown as { protocol?: { flushPending?: () => void } }).protocol;
  if (!protocol || typeof protocol.flushPending !== 'function') return;
  const flushNow = protocol.flushPending.bind(protocol);
  let scheduled = false;
  protocol.flushPending = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      flushNow();
    });
  };
}
