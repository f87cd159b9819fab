// What a running peekd is made of, as the parts that serve it (HTTP, the admin API, the
// operator tools) see it. Types only: src/server.ts builds it.
import type { NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import type { ActorHost } from './actors/actorHost.ts';
import type { CommandBus } from './actors/commandBus.ts';
import type { DeadlineScheduler } from './actors/scheduler.ts';
import type { JobLeases, ShardLeases } from './cluster/shardLeases.ts';
import type { Health } from './health.ts';
import type { Shutdown } from './shutdown.ts';
import type { Config } from './config.ts';
import type { SigningKey } from './crypto/index.ts';
import type { Naming } from './events/subjects.ts';
import type { FederationContext } from './federation/context.ts';
import type { ClientContext } from './http/client/context.ts';
import type { Logger } from './logger.ts';
import type { EventLog } from './nats/eventLog.ts';
import type { ProjectionRunner } from './projections/runner.ts';
import type { Database } from './store/db.ts';
import type { SyncNotifier } from './syncapi/notifier.ts';

export interface HttpApp {
  app: FastifyInstance;
  /** From now on /_matrix/client/versions answers (scripts wait on it). */
  markReady(): void;
}

export interface Peekd {
  config: Config;
  logger: Logger;
  naming: Naming;
  nc: NatsConnection;
  log: EventLog;
  database: Database;
  bus: CommandBus;
  /** The local actor host (rooms role), if this process has one. */
  host?: ActorHost;
  signingKey: SigningKey;
  projections: Map<string, ProjectionRunner>;
  scheduler?: DeadlineScheduler;
  /** This process's ID in leases (shards and jobs). */
  hostId: string;
  /** With roles split: the shard leases this room host holds. */
  leases?: ShardLeases;
  /** With roles split: the job leases (projections, federation) this process takes part in. */
  jobs: JobLeases[];
  /** The position each projection has committed (here, or wherever it runs when split). */
  committed(projection: string): number;
  /** Readiness and the metrics read at scrape time. */
  health: Health;
  /** The steps close() runs, in order (running: the one under way). */
  shutdown: Shutdown;
  http?: HttpApp;
  client: ClientContext;
  federation: FederationContext;
  notifier: SyncNotifier;
  /** Base URL the HTTP server listens on, when it does. */
  url?: string;
  /** Resolves once the sync projection of `stream` (with 'all' every one, or the ones named) has committed `seq`; 503 past `timeoutMs` (PEEKD_PROJECTION_WAIT_MS). */
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all' | readonly string[], timeoutMs?: number): Promise<void>;
  /** The graceful shutdown: readiness drops, HTTP drains, mailboxes drain, projections commit, leases are handed over, connections close. */
  close(): Promise<void>;
}
