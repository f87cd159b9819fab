// One server's roles split across peekd instances in this test process: each instance has
// its own NATS connection and leases, all share one database (Postgres, or one in-memory
// PGlite), one stream prefix and one data dir (one signing key). `close()` removes it all.
import { loadConfig } from '../../src/config.ts';
import { Naming } from '../../src/events/subjects.ts';
import { connectNats } from '../../src/nats/connection.ts';
import { deleteStreams } from '../../src/nats/streams.ts';
import { startPeekd, type Peekd } from '../../src/server.ts';
import type { Database } from '../../src/store/db.ts';
import { createTestDatabase, natsUrl, tempDir, uniqueName, type TestDatabase } from './services.ts';
import { TestUser } from './matrix.ts';

export interface SplitDeployment {
  serverName: string;
  prefix: string;
  /** Starts an instance with `roles` (and extra settings); HTTP on a free loopback port unless `env` says otherwise. */
  start(roles: string, env?: Record<string, string>): Promise<Peekd>;
  /** Stops one instance cleanly (its leases are handed over). */
  stop(instance: Peekd): Promise<void>;
  close(): Promise<void>;
}

export async function splitDeployment(options: { shards: number; env?: Record<string, string>; serverName?: string; label?: string }): Promise<SplitDeployment> {
  const serverName = options.serverName ?? `${uniqueName(options.label ?? 'split')}.test`;
  const prefix = `${uniqueName()}_`;
  const dir = tempDir(`peekd-${options.label ?? 'split'}-`);
  const db: TestDatabase = await createTestDatabase();
  const database: Database = await db.open();
  const instances: Peekd[] = [];
  return {
    serverName,
    prefix,
    async start(roles, env = {}) {
      const config = loadConfig(
        {
          PEEKD_SERVER_NAME: serverName,
          PEEKD_LISTEN: '127.0.0.1:0',
          PEEKD_DATA_DIR: dir.path,
          NATS_URL: natsUrl(),
          PEEKD_STREAM_PREFIX: prefix,
          PEEKD_SHARDS: String(options.shards),
          PEEKD_ROLES: roles,
          PEEKD_LOG_LEVEL: process.env.PEEKD_TEST_LOG_LEVEL ?? 'silent',
          PEEKD_REGISTRATION_RATE_PER_SECOND: '1000',
          ...(db.url ? { DATABASE_URL: db.url } : {}),
          ...options.env,
          ...env,
        },
        undefined,
      );
      const p = await startPeekd(config, { database });
      instances.push(p);
      return p;
    },
    async stop(instance) {
      instances.splice(instances.indexOf(instance), 1);
      await instance.close();
    },
    async close() {
      for (const p of instances.reverse()) await p.close().catch(() => undefined);
      const nc = await connectNats(natsUrl());
      await deleteStreams(nc, new Naming(prefix, options.shards)).catch(() => undefined);
      await nc.close();
      await database.close();
      await db.drop();
      dir.remove();
    },
  };
}

/**
 * A roles-split server with two HTTP processes (and one for the other roles), alice and bob
 * registered through the first, bob's same session also on the second, and a room alice
 * made (`makeRoom`) that bob has joined: the shape of "a change made through one HTTP
 * process wakes a long-poll held by another".
 */
export async function twoHttpProcesses(label: string, makeRoom: (alice: TestUser) => Promise<string>) {
  const split = await splitDeployment({ shards: 4, label });
  try {
    await split.start('rooms,projections,federation');
    const [one, two] = [await split.start('http'), await split.start('http')];
    const alice = await TestUser.register(one.url!, 'alice');
    const bobOnOne = await TestUser.register(one.url!, 'bob');
    const bobOnTwo = new TestUser(two.url!, bobOnOne.userId, bobOnOne.deviceId, bobOnOne.token);
    const room = await makeRoom(alice);
    const joined = await bobOnOne.join(room);
    if (joined.status !== 200) throw new Error(`bob's join: ${joined.status} ${JSON.stringify(joined.body)}`);
    return { split, one, two, alice, bobOnOne, bobOnTwo, room };
  } catch (err) {
    await split.close();
    throw err;
  }
}
