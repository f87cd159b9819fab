// Per-test resources on the shared servers: a uniquely named database and a unique
// stream prefix, both removed afterwards.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { connectNats } from '../../src/nats/connection.ts';
import { deleteStreams, ensureStreams } from '../../src/nats/streams.ts';
import { Naming } from '../../src/events/subjects.ts';
import { openDatabase, type Database } from '../../src/store/db.ts';
import type { NatsConnection } from '@nats-io/transport-node';

export const natsUrl = (): string => inject('natsUrl');
export const databaseUrl = (): string => inject('databaseUrl');

export function uniqueName(prefix = 't'): string {
  return `${prefix}${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

export interface TestDatabase {
  /** Postgres URL of the new database, or undefined when tests run on PGlite. */
  url?: string;
  open(): Promise<Database>;
  drop(): Promise<void>;
}

/** A fresh database: CREATE DATABASE on the shared Postgres, or in-memory PGlite. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const base = databaseUrl();
  if (!base) {
    return { url: undefined, open: () => openDatabase({ memory: true }), drop: async () => {} };
  }
  const name = uniqueName('peekd_');
  const { default: postgres } = await import('postgres');
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  const url = u.toString();
  return {
    url,
    open: () => openDatabase({ url, maxConnections: 5 }),
    drop: async () => {
      const a = postgres(base, { max: 1, onnotice: () => {} });
      await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

export interface TestStreams {
  nc: NatsConnection;
  naming: Naming;
  cleanup(): Promise<void>;
}

/** A NATS connection and this test's own PEEKS/ROOMS streams (unique prefix). */
export async function createTestStreams(shards = 8): Promise<TestStreams> {
  const nc = await connectNats(natsUrl(), 'peekd-test');
  const naming = new Naming(`${uniqueName()}_`, shards);
  await ensureStreams(nc, naming);
  return {
    nc,
    naming,
    cleanup: async () => {
      await deleteStreams(nc, naming);
      await nc.drain();
    },
  };
}

export function tempDir(prefix = 'peekd-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
