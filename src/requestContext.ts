// The request a piece of work belongs to, carried through async calls without threading
// it by hand: every command an HTTP request sends takes its command ID from the request
// ID (`<request id>`, then `<request id>.2`, …), so a 200 answer can be traced to exactly
// the envelopes it wrote, and the ID an operator sees in the X-Request-Id header and the
// logs is the one in the log's envelopes.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

interface RequestScope {
  requestId: string;
  commands: number;
}

const scope = new AsyncLocalStorage<RequestScope>();

/** Binds the rest of the current async flow (an HTTP request's hooks and handler) to `requestId`. */
export function enterRequest(requestId: string): void {
  scope.enterWith({ requestId, commands: 0 });
}

export function currentRequestId(): string | undefined {
  return scope.getStore()?.requestId;
}

/** A fresh command ID: derived from the current request when there is one. */
export function nextCommandId(): string {
  const s = scope.getStore();
  if (!s) return randomUUID();
  s.commands++;
  return s.commands === 1 ? s.requestId : `${s.requestId}.${s.commands}`;
}
