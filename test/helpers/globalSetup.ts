// Gives every test file a NATS server with JetStream and, where there is one, Postgres:
//   1. NATS_URL / DATABASE_URL when set (CI sets them to the machine's services);
//   2. otherwise testcontainers, when a Docker engine answers;
//   3. otherwise a throwaway nats-server started here, and PGlite (in-process) for Postgres.
// A test that cannot get a server fails loudly; nothing is skipped.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { findNatsServer, startEmbeddedNats } from '../../src/nats/embeddedServer.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    natsUrl: string;
    databaseUrl: string;
  }
}

async function dockerAvailable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const stops: (() => Promise<unknown>)[] = [];
  let natsUrl = process.env.NATS_URL ?? '';
  let databaseUrl = process.env.DATABASE_URL ?? '';
  const docker = (!natsUrl || !databaseUrl) && !findNatsServer() ? await dockerAvailable() : false;

  if (!natsUrl) {
    if (docker) {
      const { GenericContainer, Wait } = await import('testcontainers');
      const c = await new GenericContainer('nats:2.10')
        .withCommand(['-js'])
        .withExposedPorts(4222)
        .withWaitStrategy(Wait.forLogMessage(/Server is ready/))
        .start();
      stops.push(() => c.stop());
      natsUrl = `nats://${c.getHost()}:${c.getMappedPort(4222)}`;
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'peekd-test-nats-'));
      const nats = await startEmbeddedNats({ storeDir: dir });
      stops.push(async () => {
        await nats.stop();
        rmSync(dir, { recursive: true, force: true });
      });
      natsUrl = nats.url;
    }
  }
  if (!databaseUrl && docker) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const c = await new GenericContainer('postgres:15')
      .withEnvironment({ POSTGRES_PASSWORD: 'peekd', POSTGRES_DB: 'postgres' })
      .withExposedPorts(5432)
      .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
      .start();
    stops.push(() => c.stop());
    databaseUrl = `postgres://postgres:peekd@${c.getHost()}:${c.getMappedPort(5432)}/postgres`;
  }
  // Empty databaseUrl: each test uses PGlite.
  project.provide('natsUrl', natsUrl);
  project.provide('databaseUrl', databaseUrl);
  return async () => {
    for (const stop of stops.reverse()) await stop();
  };
}
