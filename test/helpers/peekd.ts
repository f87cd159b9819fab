// Starts a real peekd in this process for a test: its own server name, loopback port,
// database (a fresh Postgres database, or PGlite) and stream prefix. `close()` removes all.
import { loadConfig } from '../../src/config.ts';
import { startPeekd, type Peekd } from '../../src/server.ts';
import type { Clock } from '../../src/actors/roomActor.ts';
import { deleteStreams } from '../../src/nats/streams.ts';
import { createTestDatabase, natsUrl, tempDir, uniqueName } from './services.ts';

export interface TestPeekd {
  peekd: Peekd;
  url: string;
  serverName: string;
  close(): Promise<void>;
}

export interface TestPeekdOptions {
  serverName?: string;
  /** Extra env-style settings (PEEKD_PEEK_LIFETIME_MS, …). */
  env?: Record<string, string>;
  clock?: Clock;
  /** Reuse a database / prefix / data dir (restart tests). */
  reuse?: { databaseUrl?: string; prefix: string; dataDir: string; port?: number };
}

export async function startTestPeekd(options: TestPeekdOptions = {}): Promise<TestPeekd & { databaseUrl?: string; prefix: string; dataDir: string; dropAll(): Promise<void> }> {
  const serverName = options.serverName ?? `${uniqueName('hs')}.test`;
  const db = options.reuse ? undefined : await createTestDatabase();
  const dir = options.reuse ? undefined : tempDir();
  const prefix = options.reuse?.prefix ?? `${uniqueName()}_`;
  const dataDir = options.reuse?.dataDir ?? dir!.path;
  const databaseUrl = options.reuse ? options.reuse.databaseUrl : db!.url;
  const config = loadConfig(
    {
      PEEKD_SERVER_NAME: serverName,
      PEEKD_LISTEN: `127.0.0.1:${options.reuse?.port ?? 0}`,
      PEEKD_DATA_DIR: dataDir,
      NATS_URL: natsUrl(),
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      PEEKD_STREAM_PREFIX: prefix,
      PEEKD_SHARDS: '8',
      PEEKD_LOG_LEVEL: process.env.PEEKD_TEST_LOG_LEVEL ?? 'silent',
      PEEKD_REGISTRATION_RATE_PER_SECOND: '10000',
      ...options.env,
    },
    undefined,
  );
  const peekd = await startPeekd(config, { clock: options.clock });
  const close = () => peekd.close();
  /** Closes and removes the database, streams and data dir. */
  const dropAll = async () => {
    await peekd.close();
    const { connectNats } = await import('../../src/nats/connection.ts');
    const nc = await connectNats(natsUrl());
    await deleteStreams(nc, peekd.naming);
    await nc.close();
    await db?.drop();
    dir?.remove();
  };
  return { peekd, url: peekd.url!, serverName, close, databaseUrl, prefix, dataDir, dropAll };
}
