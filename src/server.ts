// The composition root: wires NATS, the streams, Postgres, the room actors, the
// projections, the scheduler and HTTP into one running peekd.
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { ActorHost } from './actors/actorHost.ts';
import { LocalCommandBus, RetryingCommandBus, type CommandBus } from './actors/commandBus.ts';
import { systemClock, type Clock } from './actors/roomActor.ts';
import { DeadlineScheduler } from './actors/scheduler.ts';
import { KvSnapshotStore } from './actors/snapshots.ts';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { ALL_ROLES } from './config.ts';
import { NatsCommandBus } from './cluster/natsCommandBus.ts';
import { CommandServer } from './cluster/commandServer.ts';
import { JobLeases, ShardLeases } from './cluster/shardLeases.ts';
import { RemotePositions, peekBatchOf, roomBatchOf, wakeMessage } from './cluster/wakeups.ts';
import type { Config } from './config.ts';
import { loadOrCreateSigningKeyFile } from './crypto/index.ts';
import { Naming } from './events/subjects.ts';
import { createLogger, type Logger } from './logger.ts';
import { SigningPduFactory } from './matrix/pduFactory.ts';
import { connectNats } from './nats/connection.ts';
import { startEmbeddedNats, type EmbeddedNats } from './nats/embeddedServer.ts';
import { EventLog } from './nats/eventLog.ts';
import { ensureStreams } from './nats/streams.ts';
import { retryTransient, ServiceUnavailableError, withDeadline } from './nats/errors.ts';
import { federationPeeksProjection } from './projections/federationPeeks.ts';
import { PROJECTIONS } from './projections/index.ts';
import { ProjectionRunner } from './projections/runner.ts';
import { ReadBarrier } from './projections/readBarrier.ts';
import { streamLastSeq } from './projections/rebuild.ts';
import type { Projected } from './projections/projection.ts';
import type { PeekEvent } from './events/peekEvents.ts';
import type { RoomEvent } from './events/roomEvents.ts';
import { SyncNotifier } from './syncapi/notifier.ts';
import { RoomReader } from './syncapi/roomReader.ts';
import { PeekReader } from './syncapi/peekReader.ts';
import { SyncService } from './syncapi/sync.ts';
import { SyncCache } from './syncapi/syncCache.ts';
import { AccountStore } from './clientapi/accounts.ts';
import type { ClientContext } from './http/client/context.ts';
import { syncPeeksProjection } from './projections/syncPeeks.ts';
import { syncRoomsProjection } from './projections/syncRooms.ts';
import { federationOutboxProjection } from './projections/federationOutbox.ts';
import { ServerResolver } from './federation/resolver.ts';
import { FederationClient } from './federation/client.ts';
import { OwnKeys, loadOldKeys } from './federation/ownKeys.ts';
import { KeyRing } from './federation/keyRing.ts';
import { SafeFetcher } from './federation/safeFetch.ts';
import { FederationSender } from './federation/sender.ts';
import { OutboundPeeks } from './federation/outboundPeeks.ts';
import { OutboundUpkeep } from './federation/outboundUpkeep.ts';
import { LRUCache } from 'lru-cache';
import { RemoteHistory } from './federation/remoteHistory.ts';
import type { FederationContext } from './federation/context.ts';
import { openDatabase, type Database } from './store/db.ts';
import { buildHttpApp, drainHttp, startOpsListener } from './http/app.ts';
import { Health } from './health.ts';
import { Shutdown } from './shutdown.ts';
import type { Peekd } from './peekd.ts';
import { fileURLToPath } from 'node:url';

export const NATS_CONF = fileURLToPath(new URL('../nats.conf', import.meta.url));

export interface Infrastructure {
  nc: NatsConnection;
  naming: Naming;
  database: Database;
  close(): Promise<void>;
}

/**
 * The migrated database, NATS (NATS_URL, or a nats-server started on the data dir) and the
 * streams: what `serve` and the operator commands (replay, verify, audit) share.
 */
export async function openInfrastructure(config: Config, logger: Logger, shared?: Database): Promise<Infrastructure> {
  const closers: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch((err) => logger.warn({ err }, 'shutdown step failed'));
  };
  try {
    // The database first: an embedded one is locked to one process, and a second peekd on
    // the same data directory must stop before it starts a nats-server on the same store.
    const database = shared ?? (await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir }));
    if (!shared) closers.push(() => database.close());
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
    await retryTransient(() => ensureStreams(nc, naming, config.streamReplicas));
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
  /** Use this (already migrated) database instead of opening one: several in-process instances share it in tests. */
  database?: Database;
}

export type { Peekd, HttpApp } from './peekd.ts';

export { PROJECTIONS } from './projections/index.ts';

export async function startPeekd(config: Config, options: StartOptions = {}): Promise<Peekd> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  const shutdown = new Shutdown(logger);
  const jobs: JobLeases[] = [];
  try {
    const infra = await openInfrastructure(config, logger, options.database);
    shutdown.add('connections', 'NATS, Postgres and an embedded nats-server', () => infra.close());
    const { nc, naming, database } = infra;
    const log = await EventLog.open(nc, naming, logger.child({ component: 'log' }));

    const { key: signingKey, created } = await loadOrCreateSigningKeyFile(config.signingKeyPath);
    if (created) logger.info({ keyId: signingKey.keyId, path: config.signingKeyPath }, 'generated a new signing key');

    const roles = new Set(config.roles);
    const allInOne = ALL_ROLES.every((r) => roles.has(r));

    // The rooms role: the actor host. All in one process it is called directly; with
    // roles split it serves the shards it holds leases for over NATS request/reply.
    let host: ActorHost | undefined;
    let leases: ShardLeases | undefined;
    if (roles.has('rooms')) {
      const h = new ActorHost({
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
        snapshots: config.snapshotInterval > 0 ? await KvSnapshotStore.open(nc, naming, config.streamReplicas) : undefined,
        // All in one process, this is the only writer of every room (one such process per
        // stream prefix). Split, a lease does not fence a host that paused past it and goes
        // on appending, so room hosts keep checking the log.
        exclusive: allInOne,
        logger: logger.child({ component: 'actors' }),
      });
      host = h;
      shutdown.add('mailboxes', 'room actor mailboxes', () => h.stop());
    }
    // Every command rides out a shard changing owner or a NATS node going away: it is tried
    // again with the same command ID until the lease TTL plus a margin, then answered 503.
    const bus: CommandBus = new RetryingCommandBus(allInOne ? new LocalCommandBus(host!) : new NatsCommandBus(nc, naming), config.leaseTtlMs + 5_000, (err, command, attempt) =>
      logger.debug({ err, room: command.roomId, command: command.type, attempt }, 'command retried'),
    );

    const notifier = new SyncNotifier();
    // Per-user and per-device sync reads stay in memory when every projection runs here
    // (split, the batches that would invalidate it arrive only as summaries).
    const syncCache = allInOne ? new SyncCache() : undefined;
    // The federation role: keys, the signed client, the sender and outbound peeks.
    const fetcher = new SafeFetcher({ ipDenylist: config.federationIpDenylist, ipAllowlist: config.federationIpAllowlist, maxResponseBytes: config.maxFederationResponseBytes });
    const resolver = new ServerResolver(config.federationDestinations, () => clock.now(), fetcher);
    const federationClient = new FederationClient(config.serverName, signingKey, resolver, fetcher);
    const ownKeys = new OwnKeys(config.serverName, signingKey, await loadOldKeys(config.signingKeyPath), () => clock.now());
    const keyRing = new KeyRing(resolver, () => clock.now(), { serverName: config.serverName, keys: new Map([[signingKey.keyId, signingKey.publicKey]]) }, { fetcher });
    const federationOn = roles.has('federation');
    const sender = new FederationSender(database.db, federationClient, config.serverName, () => clock.now(), logger.child({ component: 'federation-sender' }));
    const wakeSender = (discover: boolean) => {
      if (federationOn) sender.wake(discover).catch((err) => logger.warn({ err }, 'federation sender wake failed'));
    };
    /** What a committed batch of each projection wakes, wherever the projection ran. */
    const onCommittedLocally = (projection: string, batch: Projected<unknown>[], fromRemote = false) => {
      if (projection === syncRoomsProjection.name) {
        syncCache?.onRoomEvents(batch as Projected<RoomEvent>[]);
        notifier.onRoomEvents(batch as Projected<RoomEvent>[]);
        wakeSender(false);
      } else if (projection === syncPeeksProjection.name) {
        syncCache?.onPeekEvents(batch as Projected<PeekEvent>[]);
        notifier.onPeekEvents(batch as Projected<PeekEvent>[]);
      } else if (projection === federationPeeksProjection.name || projection === federationOutboxProjection.name) {
        // Only peeks between servers give the sender new work (not device peeks).
        // (A wake message from another process does not say which kinds it held: wake anyway.)
        if (fromRemote || (batch as Projected<PeekEvent>[]).some((b) => b.event.peek.kind !== 'device')) wakeSender(true);
      }
    };

    // The projections role: runners. All in one process they run here; split, each runs in
    // whichever projections process holds its job lease, and announces its batches on NATS.
    const projections = new Map<string, ProjectionRunner>();
    if (roles.has('projections')) {
      for (const p of PROJECTIONS) {
        const runner = new ProjectionRunner(database.db, nc, naming, p, {
          logger,
          waitTimeoutMs: config.projectionWaitMs,
          // ROOMS commits wake long-polls: at once. PEEKS (device peeks, audit, peers' peeks)
          // gather under a steady stream; a read that waits for them hurries the commit.
          lingerMs: p.stream === 'peeks' ? config.projectionLingerMs : 0,
          onCommitted: (seq, batch) => {
            if (allInOne) onCommittedLocally(p.name, batch);
            else nc.publish(naming.wakeSubject(), JSON.stringify(wakeMessage(p.name, p.stream, seq, batch)));
          },
        });
        projections.set(p.name, runner);
        if (allInOne) {
          await runner.start();
          shutdown.add('projections', `projection ${p.name}`, () => runner.stop());
        }
      }
    }
    // Split, positions and wake-ups come from NATS (and the checkpoints), wherever the runners are.
    let remote: RemotePositions | undefined;
    if (!allInOne) {
      const r = new RemotePositions(nc, naming, database.db, PROJECTIONS, (msg) => {
        if (msg.stream === 'rooms') onCommittedLocally(msg.projection, roomBatchOf(msg), true);
        else onCommittedLocally(msg.projection, peekBatchOf(msg), true);
      });
      await r.start();
      remote = r;
      shutdown.add('projections', 'projection positions', async () => r.stop());
    }
    const committed = (name: string) => (remote ? remote.committed(name) : (projections.get(name)?.committed ?? 0));
    /**
     * Resolves once `seq` is committed by the sync projection of `stream` (what a client's
     * next /sync reads: read your writes), with `which = 'all'` by every projection of it, or
     * by the projections `which` names; 503 past `timeoutMs`.
     */
    const waitForProjections = async (stream: 'peeks' | 'rooms', seq: number, which: 'sync' | 'all' | readonly string[] = 'sync', timeoutMs = config.projectionWaitMs) => {
      const wanted = which === 'sync' ? [stream === 'rooms' ? syncRoomsProjection.name : syncPeeksProjection.name] : which;
      const names = PROJECTIONS.filter((p) => p.stream === stream && (wanted === 'all' || wanted.includes(p.name))).map((p) => p.name);
      if (names.every((n) => committed(n) >= seq)) return; // the common case: already visible, no timer
      // Bounded: a projection that is behind (NATS recovering, Postgres slow) makes the
      // request answer 503, never hang. The change itself is in the log and will show.
      const waits = remote ? [remote.waitFor(names, seq, timeoutMs)] : names.map((n) => projections.get(n)?.waitFor(seq, timeoutMs));
      await withDeadline(Promise.all(waits), timeoutMs, () => new ServiceUnavailableError(`the change is stored but not yet visible (${names.join(', ')} behind ${seq})`));
    };

    const hostId = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    const leaseOptions = { ttlMs: config.leaseTtlMs, replicas: config.streamReplicas, logger };
    if (!allInOne && roles.has('projections')) {
      const projectionJobs = new JobLeases(
        nc,
        naming,
        hostId,
        'projections',
        PROJECTIONS.map((p) => p.name),
        {
          acquired: (name) => projections.get(name)!.start(),
          released: (name) => projections.get(name)!.stop(),
        },
        leaseOptions,
      );
      await projectionJobs.start();
      jobs.push(projectionJobs);
      shutdown.add('projections', 'projection job leases', () => projectionJobs.stop());
      logger.info({ hostId, projections: projectionJobs.held }, 'projections process holds its jobs');
    }
    if (host && !allInOne) {
      const server = new CommandServer(nc, naming, host, logger);
      const l = new ShardLeases(nc, naming, hostId, { acquired: (k) => server.serve(k), released: (k) => server.release(k) }, leaseOptions);
      await l.start();
      leases = l;
      shutdown.add('work', 'command server', () => server.stop());
      shutdown.add('leases', 'shard leases', () => l.stop());
      logger.info({ hostId, shards: l.shards.length }, 'room host holds its shards');
    }

    let scheduler: DeadlineScheduler | undefined;
    if (host) {
      const s = new DeadlineScheduler(database.db, bus, clock, { logger, shards: leases ? () => leases!.shards : undefined });
      s.start();
      scheduler = s;
      shutdown.add('work', 'deadline scheduler', () => s.stop());
    }

    const rooms = new RoomReader(database.db);
    const peeks = new PeekReader(database.db);
    const barrier = new ReadBarrier(waitForProjections, () => ({ rooms: committed(syncRoomsProjection.name), peeks: committed(syncPeeksProjection.name) }));
    const [roomsEnd, peeksEnd] = await Promise.all([streamLastSeq(nc, naming, 'rooms'), streamLastSeq(nc, naming, 'peeks')]);
    barrier.seed({ rooms: roomsEnd, peeks: peeksEnd });
    const client: ClientContext = {
      config,
      db: database.db,
      accounts: Object.assign(new AccountStore(database.db, config.serverName, () => clock.now()), { guestsAllowed: config.guestAccess }),
      rooms,
      peeks,
      bus,
      clock,
      waitForProjections,
      barrier,
      sync: new SyncService({
        rooms,
        peeks,
        notifier,
        now: () => clock.now(),
        cache: syncCache,
        positions: () => ({ rooms: committed(syncRoomsProjection.name), peeks: committed(syncPeeksProjection.name) }),
      }),
    };

    // History of peeked rooms (backfill for /messages, gaps in /send and before a re-peek's
    // snapshot): wherever HTTP is served.
    const remoteHistory =
      federationOn || roles.has('http')
        ? new RemoteHistory({ db: database.db, bus, client: federationClient, keyRing, waitForProjections, logger: logger.child({ component: 'remote-history' }) })
        : undefined;
    client.history = remoteHistory;
    // Outbound peeks: any process that serves HTTP starts them (a client's /peek) and
    // checks /send against them; the upkeep (renewals, idle ends, restarts) and the sender
    // run in one federation process at a time. Split, HTTP processes announce device syncs
    // on NATS for that upkeep.
    let outbound: OutboundPeeks | undefined;
    let upkeep: OutboundUpkeep | undefined;
    if (federationOn || roles.has('http')) {
      const o = new OutboundPeeks({
        db: database.db,
        bus,
        client: federationClient,
        keyRing,
        clock,
        serverName: config.serverName,
        waitForProjections,
        history: remoteHistory,
        logger: logger.child({ component: 'outbound-peeks' }),
      });
      outbound = o;
      shutdown.add('work', 'outbound peek starts', () => o.stop());
      const u = new OutboundUpkeep({
        peeks: o,
        db: database.db,
        clock,
        serverName: config.serverName,
        outboundIdleMs: config.outboundIdleMs,
        liveDevicePeeks: (userId, deviceId) => client.sync.liveDevicePeeks(userId, deviceId),
        liveDevicePeeksNow: (userId, deviceId) => client.sync.liveDevicePeeksNow(userId, deviceId),
        logger: logger.child({ component: 'outbound-upkeep' }),
      });
      upkeep = u;
      client.remote = {
        ensureOutboundPeek: (roomId, servers) => o.ensureOutboundPeek(roomId, servers),
        resolveAlias: (alias) => o.resolveAlias(alias),
        deviceSynced: allInOne ? (userId, deviceId) => u.deviceSynced(userId, deviceId) : (userId, deviceId) => announceActivity(userId, deviceId),
      };
    }
    const lastAnnounced = new LRUCache<string, true>({ max: 100_000, ttl: 1_000 });
    const announceActivity = (userId: string, deviceId: string) => {
      const key = `${userId}\u0000${deviceId}`;
      if (lastAnnounced.has(key)) return;
      lastAnnounced.set(key, true);
      nc.publish(naming.activitySubject(), JSON.stringify([userId, deviceId]));
    };
    if (federationOn && upkeep) {
      const u = upkeep;
      if (allInOne) {
        await sender.start();
        shutdown.add('work', 'federation sender', () => sender.stop());
        u.start();
        shutdown.add('work', 'outbound peek upkeep', () => u.stop());
      } else {
        const activity = nc.subscribe(naming.activitySubject(), {
          callback: (err, m) => {
            if (err) return;
            try {
              const [userId, deviceId] = JSON.parse(m.string()) as [string, string];
              if (typeof userId === 'string' && typeof deviceId === 'string') u.deviceSynced(userId, deviceId);
            } catch {
              // not ours
            }
          },
        });
        shutdown.add('work', 'device activity', async () => activity.unsubscribe());
        const federationJobs = new JobLeases(
          nc,
          naming,
          hostId,
          'federation',
          ['federation_sender', 'outbound_upkeep'],
          {
            acquired: (job) => (job === 'federation_sender' ? sender.start() : u.start()),
            released: (job) => (job === 'federation_sender' ? sender.stop() : u.stop()),
          },
          leaseOptions,
        );
        await federationJobs.start();
        jobs.push(federationJobs);
        shutdown.add('leases', 'federation job leases', () => federationJobs.stop());
        logger.info({ hostId, jobs: federationJobs.held }, 'federation process holds its jobs');
      }
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
      history: remoteHistory,
    };

    const health = new Health({ config, nc, naming, database, projections, host, leases, jobs, notifier, committed });
    if (config.metricsListen) {
      // Every process, HTTP role or not, can be scraped and probed there.
      const ops = await startOpsListener(health, config.metricsListen.host, config.metricsListen.port);
      shutdown.add('http', 'metrics listener', () => ops.close());
    }
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
      leases,
      jobs,
      committed,
      hostId,
      waitForProjections,
      health,
      shutdown,
      close: async () => {
        peekd.health.drain();
        await shutdown.close();
      },
    };

    if (options.http ?? config.roles.includes('http')) {
      const http = await buildHttpApp(peekd);
      await http.app.listen({ host: config.listenHost, port: config.listenPort });
      // Requests in flight get half the shutdown deadline to finish.
      const graceMs = Math.min(5_000, config.shutdownTimeoutMs / 2);
      shutdown.add('http', 'HTTP (long-polls answer, requests in flight finish)', () => drainHttp(http.app, () => client.sync.close(), graceMs));

      const addr = http.app.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.listenPort;
      peekd.http = http;
      peekd.url = `http://${config.listenHost.includes(':') ? `[${config.listenHost}]` : config.listenHost}:${port}`;
      http.markReady();
      logger.info({ url: peekd.url, serverName: config.serverName }, 'peekd is ready');
    }
    return peekd;
  } catch (err) {
    await shutdown.close();
    throw err;
  }
}
