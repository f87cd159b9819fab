// Opens the read-model database: Postgres through the `postgres` driver when a URL is
// given, otherwise an embedded PGlite database in the data directory. Migrations run here.
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { ExtractTablesWithRelations } from 'drizzle-orm';
import * as schema from './schema.ts';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
export type Tx = PgTransaction<PgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>;

export interface Database {
  db: Db;
  kind: 'postgres' | 'pglite';
  close(): Promise<void>;
}

export const MIGRATIONS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../drizzle');

/** Advisory lock key that serialises migrations across processes ("peekd" in ASCII). */
const MIGRATION_LOCK_KEY = 0x7065656b64;

export interface OpenOptions {
  /** Postgres URL; unset = embedded PGlite under `dataDir`. */
  url?: string;
  dataDir?: string;
  /** In-memory PGlite (tests' fallback when no Postgres is configured). */
  memory?: boolean;
  maxConnections?: number;
}

/** Most parameters a statement may have and still be prepared by `preparing`. */
export const PREPARE_MAX_PARAMS = 16;

/**
 * drizzle runs every statement through `postgres` unprepared, and `postgres` sends an
 * unprepared statement with parameters as two round trips (Parse/Describe, wait for the
 * parameter types, then Bind/Execute) and holds back the statements queued behind it, so
 * statements issued together (`pipelined`) went one at a time, two round trips each. This
 * wraps the client so that statements are prepared: `postgres` keeps them per connection,
 * keyed by text and parameter types, and a statement seen before on that connection is one
 * round trip and pipelines. Only statements with at most PREPARE_MAX_PARAMS parameters:
 * an `IN ($1, …, $n)` list makes a new text for every n, and a connection would keep them all
 * (the JSON-parameter statements of the projections and `tupleIn` have one). Postgres
 * re-plans a prepared statement when a table it reads is replaced (a replay's swap) or the
 * search_path differs.
 */
function preparing<T extends object>(client: T): T {
  const c = client as unknown as Record<string, (...args: unknown[]) => unknown>;
  // Made once per client, not on every property read: drizzle reads `unsafe` per statement.
  const unsafe = c.unsafe!.bind(client);
  const overrides: Record<string, (...args: unknown[]) => unknown> = {
    unsafe: (query, params, opts) => {
      const n = Array.isArray(params) ? params.length : 0;
      return unsafe(query, params ?? [], n <= PREPARE_MAX_PARAMS ? { ...(opts as object | undefined), prepare: true } : (opts ?? {}));
    },
  };
  // A transaction's (or savepoint's) own client, the callback's argument, prepares as well.
  for (const name of ['begin', 'savepoint']) {
    if (typeof c[name] !== 'function') continue;
    const original = c[name].bind(client);
    overrides[name] = (...args) => original(...args.map((a) => (typeof a === 'function' ? (inner: object) => (a as (x: object) => unknown)(preparing(inner)) : a)));
  }
  return new Proxy(client, {
    get: (target, prop, receiver) => (typeof prop === 'string' && Object.hasOwn(overrides, prop) ? overrides[prop] : Reflect.get(target, prop, receiver)),
    // Whoever wraps a method of the client (a tracer: `client.unsafe = wrap(client.unsafe)`)
    // wraps the override it read; the override still calls the client's own method.
    set: (target, prop, value, receiver) => {
      if (typeof prop === 'string' && Object.hasOwn(overrides, prop)) {
        overrides[prop] = value as (...args: unknown[]) => unknown;
        return true;
      }
      return Reflect.set(target, prop, value, receiver);
    },
  });
}

export async function openDatabase(options: OpenOptions): Promise<Database> {
  if (options.url) {
    const { default: postgres } = await import('postgres');
    const { drizzle } = await import('drizzle-orm/postgres-js');
    const { migrate } = await import('drizzle-orm/postgres-js/migrator');
    const client = postgres(options.url, { max: options.maxConnections ?? 20, onnotice: () => {} });
    const db = drizzle(preparing(client), { schema });
    // Several processes may start at once on one database: one migrates, the others wait
    // on a session advisory lock held on a connection of its own, then find nothing to do.
    const lock = postgres(options.url, { max: 1, onnotice: () => {} });
    try {
      await lock`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
      await migrate(db, { migrationsFolder: MIGRATIONS_DIR });
    } catch (err) {
      await client.end({ timeout: 5 });
      throw err;
    } finally {
      await lock.end({ timeout: 5 }); // ending the session releases the lock
    }
    return { db: db as unknown as Db, kind: 'postgres', close: () => client.end({ timeout: 5 }) };
  }
  const { PGlite } = await import('@electric-sql/pglite');
  const { drizzle } = await import('drizzle-orm/pglite');
  const { migrate } = await import('drizzle-orm/pglite/migrator');
  let client;
  if (options.memory) {
    client = new PGlite();
  } else {
    const dir = join(options.dataDir ?? './data', 'pglite');
    mkdirSync(dir, { recursive: true });
    client = new PGlite(dir);
  }
  const db = drizzle(client, { schema });
  await migrate(db, { migrationsFolder: MIGRATIONS_DIR });
  return { db: db as unknown as Db, kind: 'pglite', close: () => client.close() };
}

/** Rows of a raw `db.execute` result, whichever driver produced it. */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}
