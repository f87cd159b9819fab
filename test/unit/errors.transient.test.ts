// isTransient decides between "try again" (503, a retried command) and a failure. A failed
// database query carries the client's input in its message — the query's parameters, or a
// value the server quotes back — so its words must not decide: `?filter=closed%00` once came
// back 503 "try again" instead of an error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGlite } from '@electric-sql/pglite';
import { DrizzleQueryError, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/pglite';
import postgres from 'postgres';
import { isTransient } from '../../src/nats/errors.ts';

/** What a query with these parameters throws. */
async function failureOf(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (err) {
    return err;
  }
  throw new Error('the query did not fail');
}

describe('database errors, real ones (PGlite)', () => {
  let pg: PGlite;
  let db: ReturnType<typeof drizzle>;
  beforeAll(async () => {
    pg = new PGlite();
    db = drizzle(pg);
  });
  afterAll(async () => {
    if (!pg.closed) await pg.close();
  });

  it('are not transient for words in their parameters or in the values the server quotes', async () => {
    for (const value of ['closed\u0000', 'timeout\u0000', 'no responders 503\u0000']) {
      const err = await failureOf(() => db.execute(sql`SELECT ${value}::text AS v`));
      expect(String((err as Error).message)).toContain(value);
      expect(isTransient(err), JSON.stringify(value)).toBe(false);
    }
    for (const value of ['timeout', 'closed', 'disconnect']) {
      const err = await failureOf(() => db.execute(sql`SELECT ${value}::bigint AS v`));
      expect(((err as Error).cause as Error).message).toContain(value);
      expect(isTransient(err), value).toBe(false);
    }
    // Nor for the words of the query itself.
    const err = await failureOf(() => db.execute(sql`SELECT 1 AS timeout_ms, 'closed' AS state WHERE ${'x'}::int = 0`));
    expect(isTransient(err)).toBe(false);
  });

  it('are transient when the database went away under the query', async () => {
    await pg.close();
    expect(isTransient(await failureOf(() => db.execute(sql`SELECT 1`)))).toBe(true);
  });
});

describe('database errors, as postgres.js gives them', () => {
  const serverError = (code: string, message: string) => new postgres.PostgresError({ code, message, severity: 'ERROR' } as never);
  const connectionError = (code: string) => Object.assign(new Error(`write ${code} 127.0.0.1:5432`), { code });

  it('judges a server error by its SQLSTATE, never its message', () => {
    expect(isTransient(new DrizzleQueryError('SELECT $1', ['closed\u0000'], serverError('22021', 'invalid byte sequence for encoding "UTF8": 0x00')))).toBe(false);
    expect(isTransient(new DrizzleQueryError('SELECT $1::bigint', ['timeout'], serverError('22P02', 'invalid input syntax for type bigint: "timeout"')))).toBe(false);
    expect(isTransient(serverError('22P02', 'invalid input syntax for type bigint: "reconnect"'))).toBe(false);
    // The server shutting down, starting up, out of connections, the connection failing, a
    // statement or lock timeout, an idle session ended, a serialization failure or deadlock: try again.
    for (const code of ['57P01', '57P03', '57P05', '25P03', '53300', '08006', '57014', '55P03', '40001', '40P01']) {
      expect(isTransient(new DrizzleQueryError('SELECT 1', [], serverError(code, 'the database system is starting up'))), code).toBe(true);
    }
  });

  it('takes a lost connection as transient', () => {
    expect(isTransient(new DrizzleQueryError('SELECT $1', ['x'], connectionError('CONNECTION_CLOSED')))).toBe(true);
    expect(isTransient(new DrizzleQueryError('SELECT $1', ['x'], connectionError('CONNECT_TIMEOUT')))).toBe(true);
    for (const code of ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE']) {
      expect(isTransient(new DrizzleQueryError('SELECT 1', [], Object.assign(new Error('socket failure'), { code }))), code).toBe(true);
    }
  });
});

describe('messaging errors', () => {
  it('are still judged by their name, message and code', () => {
    expect(isTransient(Object.assign(new Error('TIMEOUT'), { name: 'TimeoutError' }))).toBe(true);
    expect(isTransient(new Error('503 no responders available'))).toBe(true);
    expect(isTransient(new Error('connection closed', { cause: new Error('x') }))).toBe(true);
    expect(isTransient(new Error('wrapper', { cause: new Error('draining') }))).toBe(true);
    expect(isTransient(new Error('something else'))).toBe(false);
  });
});
