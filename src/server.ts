// The composition root: wires NATS, the streams, Postgres, the room actors, the
// projections, the scheduler and HTTP into one running peekd.
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { ActorHost } from './actors/actorHost';
import { LocalCommandBus, type CommandBus } from './actors/commandBus';
import { systemClock, type Clock } from './actors/roomActor';
import { DeadlineScheduler } from './actors/scheduler';
import { KvSnapshotStore } from './actors/snapshots';
import type { Config } from './config';
import { loadOrCreateSigningKeyFile, type SigningKey } from './crypto';
import { Naming } from './events/subjects';
import { createLogger, type Logger } from './logger';
import { SigningPduFactory } from './matrix/pduFactory';
import { connectNats } from './nats/connection';
import { startEmbeddedNats, type EmbeddedNats } from './nats/embeddedServer';
import { EventLog } from './nats/eventLog';
import { ensureStreams } from './nats/streams';
import { federationPeeksProjection } from './projections/federationPeeks';
import { PROJECTIONS } from './projections/index';
import { ProjectionRunner, type RunnerOptions } from './projections/runner';
import type { Projected } from './projections/projection';
import type { PeekEvent } from './events/peekEvents';
import type { RoomEvent } from './events/roomEvents';
import { SyncNotifier } from './syncapi/notifier';
import { RoomReader } from './syncapi/roomReader';
import { PeekReader } from './syncapi/peekReader';
import { SyncService } from './syncapi/sync';
import { AccountStore } from './clientapi/accounts';
import type { ClientContext } from './http/client/context';
import { syncPeeksProjection } from './projections/syncPeeks';
import { syncRoomsProjection } from './projections/syncRooms';
import { federationOutboxProjection } from './projections/federationOutbox';
import { ServerResolver } from './federation/resolver';
import { FederationClient } from './federation/client';
import { OwnKeys, loadOldKeys } from './federation/ownKeys';
import { KeyRing } from './federation/keyRing';
import { FederationSender } from './federation/sender';
import { OutboundPeeks } from './federation/outboundPeeks';
import type { FederationContext } from './federation/context';
import { openDatabase, type Database } from './store/db';
import { buildHttpApp, type HttpApp } from './http/app';
import { fileURLToPath } from 'node:url';

export const NATS_CONF = fileURLToPath(new URL('../nats.conf', import.meta.url));

export interface Infrastructure {
  nc: NatsConnection;
  naming: Naming;
  database: Database;
  close(): Promise<void>;
}

/**
 * NATS (NATS_URL, or a nats-server started on the data dir), the streams, and the
 * migrated database: what `serve` and the operator commands (replay, verify, audit) share.
 */
export async function openInfrastructure(config: Config, logger: Logger): Promise<Infrastructure> {
  const closers: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch((err) => logger.warn({ err }, 'shutdown step failed'));
  };
  try {
    let natsUrl = config.natsUrl;
    if (!natsUrl) {
      const embedded: EmbeddedNats = await startEmbeddedNats({ storeDir: join(config.dataDir, 'nats'), configFile: NATS_CONF, bin: config.natsServerBin });
      closers.push(() => embedded.stop());
      natsUrl = embedded.url;
      logger.info({ url: natsUrl }, 'started embedded nats-server');
    }
    const nc = await connectNats(natsUrl, `peekd ${config.serverName}`);
    closers.push(() => nc.drain());
    const naming = new Naming(config.streamPrefix, config.shards);
    await ensureStreams(nc, naming);
    const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
    closers.push(() => database.close());
    return { nc, naming, database, close };
  } catch (err) {
    await close();
    throw err;
  }
}

export interface StartOptions {
  clock?: Clock;
  logger?: Logger;
  /** Start HTTP (default: when the `http` role is on). */
  http?: boolean;
}

export interface Peekd {
  config: Config;
  logger: Logger;
  naming: Naming;
  nc: NatsConnection;
  log: EventLog;
  database: Database;
  bus: CommandBus;
  host: ActorHost;
  signingKey: SigningKey;
  projections: Map<string, ProjectionRunner>;
  scheduler: DeadlineScheduler;
  http?: HttpApp;
  client: ClientContext;
  federation: FederationContext;
  notifier: SyncNotifier;
  /** Base URL the HTTP server listens on, when it does. */
  url?: string;
  /** Resolves once every projection reading `stream` has committed `seq`. */
  waitForProjections(stream: 'peeks' | 'rooms', seq: number): Promise<void>;
  close(): Promise<void>;
}

export { PROJECTIONS } from './projections/index';

export async function startPeekd(config: Config, options: StartOptions = {}): Promise<Peekd> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  const cleanups: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await c().catch((err) => logger.warn({ err }, 'shutdown step failed'));
  };
  try {
    const infra = await openInfrastructure(config, logger);
    cleanups.push(() => infra.close());
    const { nc, naming, database } = infra;
    const log = await EventLog.open(nc, naming);

    const { key: signingKey, created } = await loadOrCreateSigningKeyFile(config.signingKeyPath);
    if (created) logger.info({ keyId: signingKey.keyId, path: config.signingKeyPath }, 'generated a new signing key');

    const host = new ActorHost({
      log,
      clock,
      pduFactory: new SigningPduFactory(config.serverName, signingKey),
      settings: {
        serverName: config.serverName,
        peekLifetimeMs: config.peekLifetimeMs,
        inboundRenewalIntervalMs: config.inboundRenewalIntervalMs,
        maxConflictRetries: 16,
        snapshotInterval: config.snapshotInterval,
      },
      snapshots: config.snapshotInterval > 0 ? await KvSnapshotStore.open(nc, naming) : undefined,
    });
    cleanups.push(() => host.stop());
    const bus = new LocalCommandBus(host);

    const notifier = new SyncNotifier();
    // The federation role: keys, the signed client, the sender and outbound peeks.
    const resolver = new ServerResolver(config.federationDestinations, () => clock.now());
    const federationClient = new FederationClient(config.serverName, signingKey, resolver);
    const ownKeys = new OwnKeys(config.serverName, signingKey, await loadOldKeys(config.signingKeyPath), () => clock.now());
    const keyRing = new KeyRing(resolver, () => clock.now(), { serverName: config.serverName, keys: new Map([[signingKey.keyId, signingKey.publicKey]]) });
    const federationOn = config.roles.includes('federation');
    const sender = new FederationSender(database.db, federationClient, config.serverName, () => clock.now(), logger.child({ component: 'federation-sender' }));
    const wakeSender = (discover: boolean) => {
      if (federationOn) sender.wake(discover).catch((err) => logger.warn({ err }, 'federation sender wake failed'));
    };
    const wakeups: Record<string, RunnerOptions['onCommitted']> = {
      [syncRoomsProjection.name]: (_seq, batch) => {
        notifier.onRoomEvents(batch as Projected<RoomEvent>[]);
        wakeSender(false);
      },
      [syncPeeksProjection.name]: (_seq, batch) => notifier.onPeekEvents(batch as Projected<PeekEvent>[]),
      [federationPeeksProjection.name]: () => wakeSender(true),
      [federationOutboxProjection.name]: () => wakeSender(true),
    };
    const projections = new Map<string, ProjectionRunner>();
    for (const p of PROJECTIONS) {
      const runner = new ProjectionRunner(database.db, nc, naming, p, { logger, onCommitted: wakeups[p.name] });
      await runner.start();
      projections.set(p.name, runner);
      cleanups.push(() => runner.stop());
    }

    const scheduler = new DeadlineScheduler(database.db, bus, clock, { logger });
    scheduler.start();
    cleanups.push(() => scheduler.stop());

    const waitForProjections = async (stream: 'peeks' | 'rooms', seq: number) => {
      await Promise.all([...projections.values()].filter((r) => r.projection.stream === stream).map((r) => r.waitFor(seq)));
    };

    const rooms = new RoomReader(database.db);
    const peeks = new PeekReader(database.db);
    const client: ClientContext = {
      config,
      db: database.db,
      accounts: new AccountStore(database.db, config.serverName, () => clock.now()),
      rooms,
      peeks,
      bus,
      clock,
      waitForProjections,
      sync: new SyncService({
        rooms,
        peeks,
        notifier,
        now: () => clock.now(),
        positions: () => ({ rooms: projections.get(syncRoomsProjection.name)!.committed, peeks: projections.get(syncPeeksProjection.name)!.committed }),
      }),
    };

    let outbound: OutboundPeeks | undefined;
    if (federationOn) {
      outbound = new OutboundPeeks({
        db: database.db,
        bus,
        client: federationClient,
        keyRing,
        clock,
        serverName: config.serverName,
        outboundIdleMs: config.outboundIdleMs,
        waitForProjections,
        logger: logger.child({ component: 'outbound-peeks' }),
      });
      client.remote = outbound;
      await sender.start();
      cleanups.push(() => sender.stop());
      outbound.start();
      const o = outbound;
      cleanups.push(() => o.stop());
    }
    const federation: FederationContext = {
      config,
      db: database.db,
      bus,
      clock,
      keyRing,
      client: federationClient,
      ownKeys,
      waitForProjections,
      outbound,
    };

    const peekd: Peekd = {
      federation,
      client,
      notifier,
      config,
      logger,
      naming,
      nc,
      log,
      database,
      bus,
      host,
      signingKey,
      projections,
      scheduler,
      waitForProjections,
      close: closeAll,
    };

    if (options.http ?? config.roles.includes('http')) {
      const http = await buildHttpApp(peekd);
      await http.app.listen({ host: config.listenHost, port: config.listenPort });
      cleanups.push(() => http.app.close());
      const addr = http.app.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.listenPort;
      peekd.http = http;
      peekd.url = `http://${config.listenHost.includes(':') ? `[${config.listenHost}]` : config.listenHost}:${port}`;
      http.markReady();
      logger.info({ url: peekd.url, serverName: config.serverName }, 'peekd is ready');
    }
    return peekd;
  } catch (err) {
    await closeAll();
    throw err;
  }
}
