// What the operator's view reads besides the audit: the live peeks (from the projection
// tables), who holds each shard, and where each projection stands against its stream.
import { and, count, desc, eq, isNull, type SQL } from 'drizzle-orm';
import { InvalidInputError } from '../../actors/errors.ts';
import { ALL_ROLES, type Config } from '../../config.ts';
import type { Naming, StreamKind } from '../../events/subjects.ts';
import { seqOfPosition } from '../../events/envelope.ts';
import { readLeaseMap } from '../../cluster/leaseMap.ts';
import { PROJECTIONS } from '../../projections/index.ts';
import { parseSubjectFilters } from '../../projections/auditQuery.ts';
import { readCheckpoint, type ProjectionRunner } from '../../projections/runner.ts';
import type { Db } from '../../store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, syncapiPeeks } from '../../store/schema.ts';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

// --- live peeks --------------------------------------------------------------------------

export const PEEK_KINDS = ['device', 'inbound', 'outbound'] as const;
export type PeekKind = (typeof PEEK_KINDS)[number];

export interface LivePeeksQuery {
  roomId?: string;
  userId?: string;
  serverName?: string;
  kind?: PeekKind;
  limit: number;
}

export const DEFAULT_PEEKS_PAGE = 100;
export const MAX_PEEKS_PAGE = 1000;

/** One live peek. Device peeks name a user and device; peeks between servers a server and peek ID. */
export interface LivePeek {
  kind: PeekKind;
  room_id: string;
  user_id?: string;
  device_id?: string;
  server_name?: string;
  peek_id?: string;
  started_at: number;
  renewed_at: number;
  /** Absent for a device peek without a deadline. */
  expires_at?: number;
  /** Inbound and outbound peeks: the renewal interval agreed. */
  renewal_interval_ms?: number;
  /** Position of the PeekStarted event (the `seq` of its row in the audit). */
  started_seq: number;
}

export interface LivePeeks {
  peeks: LivePeek[];
  counts: Record<PeekKind, number>;
}

export function parseLivePeeksQuery(q: Record<string, string | undefined>): LivePeeksQuery {
  const out: LivePeeksQuery = { limit: DEFAULT_PEEKS_PAGE, ...parseSubjectFilters(q) };
  if (q.kind !== undefined) {
    if (!(PEEK_KINDS as readonly string[]).includes(q.kind)) throw new InvalidInputError(`kind must be one of ${PEEK_KINDS.join(', ')}`);
    out.kind = q.kind as PeekKind;
  }
  if (q.limit !== undefined) {
    const n = /^\d+$/.test(q.limit) ? Number(q.limit) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidInputError('limit must be a positive integer');
    out.limit = Math.min(n, MAX_PEEKS_PAGE);
  }
  return out;
}

/**
 * The live peeks that match every filter given, newest first, and how many of each kind
 * match in all. `user_id` matches device peeks only and `server_name` peeks between servers
 * only (the remote server), as in the audit.
 */
export async function queryLivePeeks(db: Db, q: LivePeeksQuery): Promise<LivePeeks> {
  const wanted = (kind: PeekKind) => q.kind === undefined || q.kind === kind;
  const device = wanted('device') && q.serverName === undefined;
  const servers = q.userId === undefined;

  const d = syncapiPeeks;
  const deviceWhere = and(isNull(d.endedSeq), q.roomId ? eq(d.roomId, q.roomId) : undefined, q.userId ? eq(d.userId, q.userId) : undefined);
  const serverWhere = (t: typeof federationsenderInboundPeeks | typeof federationsenderOutboundPeeks): SQL | undefined =>
    and(q.roomId ? eq(t.roomId, q.roomId) : undefined, q.serverName ? eq(t.serverName, q.serverName) : undefined);
  const i = federationsenderInboundPeeks;
  const o = federationsenderOutboundPeeks;
  const total = async (run: boolean, rows: Promise<{ n: number }[]>) => (run ? ((await rows)[0]?.n ?? 0) : 0);

  const [deviceRows, inboundRows, outboundRows, deviceCount, inboundCount, outboundCount] = await Promise.all([
    device ? db.select().from(d).where(deviceWhere).orderBy(desc(d.startedAt), desc(d.startedSeq)).limit(q.limit) : [],
    servers && wanted('inbound') ? db.select().from(i).where(serverWhere(i)).orderBy(desc(i.createdAt), desc(i.startedSeq)).limit(q.limit) : [],
    servers && wanted('outbound') ? db.select().from(o).where(serverWhere(o)).orderBy(desc(o.createdAt), desc(o.startedSeq)).limit(q.limit) : [],
    total(device, db.select({ n: count() }).from(d).where(deviceWhere)),
    total(servers && wanted('inbound'), db.select({ n: count() }).from(i).where(serverWhere(i))),
    total(servers && wanted('outbound'), db.select({ n: count() }).from(o).where(serverWhere(o))),
  ]);

  const peeks: LivePeek[] = [
    ...deviceRows.map((r): LivePeek => ({
      kind: 'device',
      room_id: r.roomId,
      user_id: r.userId,
      device_id: r.deviceId,
      started_at: r.startedAt,
      renewed_at: r.renewedAt,
      ...(r.expiresAt !== null ? { expires_at: r.expiresAt } : {}),
      started_seq: r.startedSeq,
    })),
    ...[...inboundRows.map((r) => ['inbound', r] as const), ...outboundRows.map((r) => ['outbound', r] as const)].map(([kind, r]): LivePeek => ({
      kind,
      room_id: r.roomId,
      server_name: r.serverName,
      peek_id: r.peekId,
      started_at: r.createdAt,
      renewed_at: r.renewedAt,
      expires_at: r.expiresAt,
      renewal_interval_ms: r.renewalIntervalMs,
      started_seq: r.startedSeq,
    })),
  ];
  // Newest first across the kinds; each kind's query already has the newest `limit`.
  peeks.sort((a, b) => b.started_at - a.started_at || b.started_seq - a.started_seq || PEEK_KINDS.indexOf(a.kind) - PEEK_KINDS.indexOf(b.kind));
  return {
    peeks: peeks.slice(0, q.limit),
    counts: { device: Number(deviceCount), inbound: Number(inboundCount), outbound: Number(outboundCount) },
  };
}

// --- the shard map -----------------------------------------------------------------------

export interface ShardEntry {
  shard: number;
  owner: string | null;
  lease_age_ms: number | null;
}

export interface JobEntry {
  job: string;
  owner: string | null;
  lease_age_ms: number | null;
}

export interface ShardMap {
  mode: 'all-in-one' | 'split';
  shards: ShardEntry[];
  this_host: string;
  /** The lease lifetime (PEEKD_LEASE_TTL_MS): a lease not renewed within it lapses. Null all in one process. */
  lease_ttl_ms: number | null;
  /** Who runs each projection and the federation jobs. */
  jobs: JobEntry[];
  /** Live holders (heartbeats) by group: `host` (room hosts), `jobs_projections`, `jobs_federation`. */
  hosts: { group: string; host: string; heartbeat_age_ms: number }[];
}

/** The jobs held by job leases with roles split (server.ts): one per projection, and the federation role's two. */
export const JOBS: readonly string[] = [...PROJECTIONS.map((p) => p.name), 'federation_sender', 'outbound_upkeep'];

export function isAllInOne(config: Pick<Config, 'roles'>): boolean {
  return ALL_ROLES.every((r) => config.roles.includes(r));
}

export async function shardMap(deps: { config: Pick<Config, 'roles' | 'leaseTtlMs'>; nc: NatsConnection; naming: Naming; hostId: string }): Promise<ShardMap> {
  const { naming, hostId } = deps;
  const numbers = Array.from({ length: naming.shards }, (_, n) => n);
  if (isAllInOne(deps.config)) {
    // One process does everything and takes no leases.
    return {
      mode: 'all-in-one',
      shards: numbers.map((shard) => ({ shard, owner: hostId, lease_age_ms: null })),
      this_host: hostId,
      lease_ttl_ms: null,
      jobs: JOBS.map((job) => ({ job, owner: hostId, lease_age_ms: null })),
      hosts: [],
    };
  }
  const leases = await readLeaseMap(deps.nc, naming);
  const jobNames = [...JOBS, ...[...leases.jobs.keys()].filter((j) => !JOBS.includes(j)).sort()];
  return {
    mode: 'split',
    shards: numbers.map((shard) => {
      const held = leases.shards.get(shard);
      return { shard, owner: held?.owner ?? null, lease_age_ms: held?.ageMs ?? null };
    }),
    this_host: hostId,
    lease_ttl_ms: deps.config.leaseTtlMs,
    jobs: jobNames.map((job) => {
      const held = leases.jobs.get(job);
      return { job, owner: held?.owner ?? null, lease_age_ms: held?.ageMs ?? null };
    }),
    hosts: leases.heartbeats.map((h) => ({ group: h.group, host: h.hostId, heartbeat_age_ms: h.ageMs })),
  };
}

// --- projections against the stream head ----------------------------------------------------

/**
 * Where one projection stands, in log messages (stream sequences), as the metrics
 * `peekd_projection_position`, `peekd_stream_head` and `peekd_projection_lag` count them.
 */
export interface ProjectionPosition {
  name: string;
  stream: 'peeks' | 'rooms';
  /** Stream sequence of the last log message the projection has wholly committed (0: none). */
  position: number;
  /** The stream's last sequence (0: the stream is empty). */
  head: number;
  /** Log messages not wholly committed yet: head − position, never below 0. */
  lag: number;
}

export async function projectionPositions(deps: { db: Db; nc: NatsConnection; naming: Naming; projections: Map<string, ProjectionRunner> }): Promise<{ projections: ProjectionPosition[] }> {
  // Heads first, positions after: a position can then only be nearer its head than it was
  // (messages that arrive in between make it pass the head, and the lag reads 0).
  const jsm = await jetstreamManager(deps.nc);
  const lastSeq = async (kind: StreamKind) => (await jsm.streams.info(deps.naming.streamName(kind))).state.last_seq;
  const [peeksHead, roomsHead] = await Promise.all([lastSeq('peeks'), lastSeq('rooms')]);
  const projections = await Promise.all(
    PROJECTIONS.map(async (p): Promise<ProjectionPosition> => {
      const head = p.stream === 'peeks' ? peeksHead : roomsHead;
      // A runner here may be stopped (its job lease went elsewhere): the checkpoint is never
      // behind what it committed, so the higher of the two is where the projection is.
      const stored = await readCheckpoint(deps.db, p.name, p.stream);
      const committed = Math.max(stored, deps.projections.get(p.name)?.committed ?? 0);
      // Committed positions are whole messages: a runner commits through the last event of
      // each message of a batch (throughSeq), so the message holding the committed position
      // is applied entirely.
      const position = seqOfPosition(committed);
      return { name: p.name, stream: p.stream, position, head, lag: Math.max(0, head - position) };
    }),
  );
  return { projections };
}
