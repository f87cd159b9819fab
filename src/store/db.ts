// Opens the read-model database: Postgres through the `postgres` driver when a URL is
// given, otherwise an embedded PGlite database in the data directory. Migrations run here.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { ExtractTablesWithRelations } from 'drizzle-orm';
import * as schema from './schema.ts';
import { checkDatabaseUrl, ConfigError } from '../config.ts';
import { makeDataDir, makeStoreDir } from './privateDirs.ts';

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
    // The driver's error for a URL it cannot parse would carry the password.
    checkDatabaseUrl(options.url);
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
  // `release` undoes what was taken before PGlite (the data directory's lock), whatever fails.
  const open = async (create: () => InstanceType<typeof PGlite>, release: () => void): Promise<Database> => {
    let client: InstanceType<typeof PGlite> | undefined;
    try {
      client = create();
      const db = drizzle(client, { schema });
      await migrate(db, { migrationsFolder: MIGRATIONS_DIR });
      const opened = client;
      return { db: db as unknown as Db, kind: 'pglite', close: () => opened.close().finally(release) };
    } catch (err) {
      await client?.close().catch(() => undefined);
      release();
      throw err;
    }
  };
  if (options.memory)
    return open(
      () => new PGlite(),
      () => {},
    );
  const dataDir = options.dataDir ?? './data';
  const dir = join(dataDir, 'pglite');
  makeDataDir(dataDir);
  makeStoreDir(dir);
  return open(() => new PGlite(dir), lockEmbeddedDatabase(join(dataDir, 'pglite.lock'), dir));
}

/**
 * Whether `pid` may be a peekd holding the embedded database: a live process that, where
 * Linux says what it runs, is a Node.js one. After a crash and a container restart its PID
 * may belong to something else (a shell, npm as PID 1), which holds nothing.
 */
function mayHoldDatabase(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false; // EPERM: alive, someone else's
  }
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return true; // not Linux, or not ours to read: assume it is
  }
  const program = cmdline.split('\0')[0] ?? '';
  return /(^|\/)node(js)?[\d.]*$/.test(program) || /peekd/.test(cmdline);
}

/**
 * PGlite keeps its database in a directory that one process at a time may open: a second
 * one fails to start ("PGlite failed to initialize properly") or, worse, writes beside the
 * first. So the embedded database is taken with a lock file holding the owner's PID; a
 * second process is refused with a message that says what to do. A lock left by a process
 * that is gone (killed, crashed), whose PID now runs something other than Node.js, or that
 * names this process (a container restarted with the same PID) is taken over. Returns the
 * release.
 */
function lockEmbeddedDatabase(lockPath: string, dir: string): () => void {
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx');
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return () => {
        try {
          if (readFileSync(lockPath, 'utf8').trim() === String(process.pid)) unlinkSync(lockPath);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 2) throw err;
      let owner: number;
      try {
        owner = Number(readFileSync(lockPath, 'utf8').trim());
      } catch {
        continue; // released meanwhile
      }
      // An empty file: its owner is between creating and writing it.
      if (!Number.isInteger(owner) || owner <= 0 || (owner !== process.pid && mayHoldDatabase(owner))) {
        throw new ConfigError(
          `the embedded database in ${dir} is in use by ${Number.isInteger(owner) && owner > 0 ? `process ${owner}` : 'another process'}: PGlite serves one process at a time. ` +
            'Stop that process first (with a peekd serving, use its admin API for replay, verify and audit), or set DATABASE_URL to a Postgres that several processes can share. ' +
            `If no such process runs, remove ${lockPath}.`,
        );
      }
      try {
        unlinkSync(lockPath); // stale
      } catch {
        // someone else took it over first; try again
      }
    }
  }
}

/** Rows of a raw `db.execute` result, whichever driver produced it. */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}
