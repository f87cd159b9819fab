import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';

/** Another writer appended to the room subject first: reload, decide again. */
export class ConcurrencyError extends Error {
  override readonly name = 'ConcurrencyError';
  constructor(
    readonly subject: string,
    readonly expectedSeq: number,
    options?: ErrorOptions,
  ) {
    super(`stale writer on ${subject}: expected last sequence ${expectedSeq}`, options);
  }
}

export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

export class ShardCountMismatchError extends Error {
  override readonly name = 'ShardCountMismatchError';
  constructor(
    readonly stream: string,
    readonly configured: number,
    readonly recorded: number,
  ) {
    super(
      `stream ${stream} was created with ${recorded} shards but PEEKD_SHARDS is ${configured}; ` +
        `the shard count is fixed when the streams are created (set PEEKD_SHARDS=${recorded}, or use a new PEEKD_STREAM_PREFIX)`,
    );
  }
}

/**
 * peekd cannot serve this now, but may in a moment: no room host holds the shard, NATS or
 * JetStream is unreachable or electing a leader, a projection is behind. HTTP answers 503
 * with Retry-After; retrying the same request is safe.
 */
export class ServiceUnavailableError extends Error {
  override readonly name: string = 'ServiceUnavailableError';
  constructor(
    message: string,
    readonly retryAfterMs = 1000,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Whether `err` is a passing fault of the messaging layer, after which the same command
 * (same command ID) may simply be tried again: a request timeout, no responders (no room
 * host, or a JetStream stream without a leader), a JetStream "temporarily unavailable"
 * (503, 10008), a connection closed or draining under us. Never a domain answer.
 *
 * Database errors are judged by what they are, never by the words of their messages: a
 * failed query's message holds the query and its parameters, and a server error's message
 * may quote a parameter (`invalid input syntax for type bigint: "timeout"`) — client input
 * that must not turn a 500 into a "try again".
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof ServiceUnavailableError) return true;
  if (!(err instanceof Error)) return false;
  if (err instanceof JetStreamApiError) return err.status === 503 || err.code === 10008;
  if (isQueryError(err)) return err.cause !== undefined && err.cause !== err && isTransient(err.cause);
  const sqlState = sqlStateOf(err);
  if (sqlState !== undefined) return TRANSIENT_SQLSTATE.test(sqlState);
  const text = `${err.name} ${err.message} ${(err as { code?: unknown }).code ?? ''}`;
  if (/TimeoutError|timeout|no responders|503|JetStreamNotEnabled|jetstream is not enabled|ConnectionClosed|closed|disconnect|draining|reconnect|ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE/i.test(text))
    return true;
  const cause = (err as { cause?: unknown }).cause;
  return cause !== undefined && cause !== err && isTransient(cause);
}

/**
 * SQLSTATEs after which the same statement may succeed in a moment: the connection failed
 * (class 08), the server is shutting down or starting up (57P01–57P03), an idle session or
 * transaction was ended (57P05, 25P03), it has no free connection (53300), a statement or
 * lock wait timed out or was cancelled (57014, 55P03), a serialization failure or deadlock
 * (40001, 40P01: commands are idempotent by ID, reads have no effect).
 */
const TRANSIENT_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[1235]|25P03|53300|57014|55P03|40001|40P01)$/;

/** A failed query as drizzle reports it (DrizzleQueryError): the query and its parameters, and the driver's error as `cause`. */
function isQueryError(err: Error): boolean {
  const { query, params } = err as { query?: unknown; params?: unknown };
  return typeof query === 'string' && Array.isArray(params);
}

/** The SQLSTATE of an error the database server sent (postgres.js and PGlite both give `code` and `severity`). */
function sqlStateOf(err: Error): string | undefined {
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Runs `fn` again while it fails transiently (several processes creating the same stream
 * or bucket at once on a fresh cluster time out), for up to `withinMs`.
 */
export async function retryTransient<T>(fn: () => Promise<T>, withinMs = 30_000): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (let delayMs = 100; ; delayMs = Math.min(delayMs * 2, 2_000)) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() + delayMs > deadline) throw err;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

/**
 * `promise`, or `onTimeout()` thrown once `ms` have passed. The promise itself goes on (its
 * late failure is swallowed): callers use this where the work is safe to finish unseen.
 */
export async function withDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms))))]);
  } finally {
    clearTimeout(timer);
  }
}
