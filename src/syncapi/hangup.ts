// A long-poll's client going away. An AbortController per /sync built an EventTarget for
// every request and an event listener per wait; thousands of woken long-polls spent ~4 % of
// their time adding and removing those. A long-poll waits on one thing at a time, so one
// listener slot is enough.
import type { IncomingMessage, ServerResponse } from 'node:http';

export class Hangup {
  private hungUp = false;
  private listener: (() => void) | undefined;

  /** True once the client has gone. */
  get aborted(): boolean {
    return this.hungUp;
  }

  /** The client went away: calls the listener, once. */
  abort(): void {
    if (this.hungUp) return;
    this.hungUp = true;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  /** Sets (or, with undefined, clears) what to call when the client goes; one at a time. */
  onAbort(listener: (() => void) | undefined): void {
    this.listener = listener;
  }
}

/** Hangs up when the response's connection closes before the response was written. */
export function hangupOnClose(req: IncomingMessage, res: ServerResponse): Hangup {
  const hangup = new Hangup();
  res.once('close', () => {
    if (!res.writableFinished) hangup.abort();
  });
  if (req.socket?.destroyed) hangup.abort(); // gone before the listener was there
  return hangup;
}
