// Outbound peeks (MSC2444), one peek's lifecycle: this server peeks a room hosted
// elsewhere because a local device peeks it. Starts the peek (checking the snapshot),
// renews it, and ends it (the host is then sent a DELETE by the sender). When to renew,
// end or restart a peek is the upkeep's business (outboundUpkeep.ts).
import { randomBytes } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { CommandBus } from '../actors/commandBus.ts';
import type { ReceivedPdu } from '../actors/commands.ts';
import { BadStateError, DomainError } from '../actors/errors.ts';
import type { Clock } from '../actors/roomActor.ts';
import { isValidRoomId, isValidServerName, serverOf } from '../events/ids.ts';
import type { Pdu } from '../events/roomEvents.ts';
import type { Db } from '../store/db.ts';
import { federationsenderOutboundPeeks, syncapiPeeks } from '../store/schema.ts';
import { MatrixError } from '../matrix/errors.ts';
import { FederationUnreachableError, type FederationClient } from './client.ts';
import type { OutboundHooks } from './context.ts';
import type { KeyRing } from './keyRing.ts';
import type { RemoteHistory } from './remoteHistory.ts';
import { OutboundRequestError, type OutboundFailure } from './safeFetch.ts';
import { checkPdu } from './verifyPdu.ts';
import { settled } from '../projections/settled.ts';

/** Room versions whose events we can check (reference-hash event IDs, known redaction rules). */
export const SUPPORTED_ROOM_VERSIONS = ['10', '9', '8', '7', '6', '5', '4', '3'];
export const MIN_RENEWAL_INTERVAL_MS = 1_000;
export const MAX_RENEWAL_INTERVAL_MS = 24 * 60 * 60_000;
/** Rooms whose last peeking server is remembered (the least recently used are forgotten first). */
const MAX_TRACKED_ROOMS = 100_000;

export function clampRenewalInterval(ms: unknown, fallback: number): number {
  const n = typeof ms === 'number' && Number.isFinite(ms) ? ms : fallback;
  return Math.min(MAX_RENEWAL_INTERVAL_MS, Math.max(MIN_RENEWAL_INTERVAL_MS, Math.round(n)));
}

export function newPeekId(): string {
  return randomBytes(6).toString('base64url'); // 8 characters of [A-Za-z0-9_-]
}

interface Snapshot {
  room_version?: unknown;
  renewal_interval?: unknown;
  latest_event?: unknown;
  state?: unknown;
  auth_chain?: unknown;
  events?: unknown;
}

export interface OutboundDeps {
  db: Db;
  bus: CommandBus;
  client: FederationClient;
  keyRing: KeyRing;
  clock: Clock;
  serverName: string;
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all'): Promise<void>;
  /** Fills the gap between what we hold and a re-peek's snapshot (src/federation/remoteHistory.ts). */
  history?: Pick<RemoteHistory, 'withMissingEvents'>;
  logger?: Logger;
}

/** What became of a renewal: done, to be tried again after `retryInMs`, or the peek ended. */
export type RenewOutcome = { renewed: true } | { renewed: false; retryInMs?: number };

export class OutboundPeeks implements OutboundHooks {
  /** Starts (and re-PUTs) in progress, by room: concurrent callers share one. */
  private readonly inflight = new Map<string, Promise<void>>();
  /** The servers a room was last peeked through (tried first when the peek restarts). */
  private readonly serversOf = new LRUCache<string, string[]>({ max: MAX_TRACKED_ROOMS });

  /** Called with the room each time a peek starts (the upkeep forgets its retry backoff). */
  readonly started = new Set<(roomId: string) => void>();

  constructor(private readonly deps: OutboundDeps) {}

  /** Waits for the starts in progress. */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.inflight.values()]);
  }

  /** Whether a start (or a re-PUT) of `roomId`'s peek is in progress. */
  starting(roomId: string): boolean {
    return this.inflight.has(roomId);
  }

  /** The servers to ask when `roomId`'s peek starts again: the last one it went through, then the room's own. */
  restartServers(roomId: string): string[] {
    return [...(this.serversOf.get(roomId) ?? []), serverOf(roomId)];
  }

  // --- for the client API ---------------------------------------------------------------

  async ensureOutboundPeek(roomId: string, servers: string[]): Promise<void> {
    const running = this.inflight.get(roomId);
    if (running) return running;
    // Registered before the first await, so concurrent callers share one start.
    const p: Promise<void> = (async () => {
      if (await this.live(roomId)) return;
      await this.startPeek(roomId, servers);
      for (const listener of this.started) listener(roomId);
    })().finally(() => {
      if (this.inflight.get(roomId) === p) this.inflight.delete(roomId);
    });
    this.inflight.set(roomId, p);
    return p;
  }

  async resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }> {
    const server = serverOf(alias);
    let res;
    try {
      res = await this.deps.client.request<{ room_id?: unknown; servers?: unknown; errcode?: string; error?: string }>(
        server,
        'GET',
        `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(alias)}`,
      );
    } catch (err) {
      this.deps.logger?.warn({ alias, server, err: (err as Error).message }, 'could not resolve a remote alias');
      throw new MatrixError(502, 'M_UNKNOWN', `could not reach ${server} to resolve ${alias}: ${clientSafeReason(err)}`);
    }
    if (res.status === 404) throw new MatrixError(404, 'M_NOT_FOUND', res.body.error ?? `unknown room alias ${alias}`);
    if (res.status !== 200 || typeof res.body.room_id !== 'string' || !isValidRoomId(res.body.room_id)) {
      throw new MatrixError(502, 'M_UNKNOWN', `${server} could not resolve ${alias} (${res.status})`);
    }
    const servers = Array.isArray(res.body.servers) ? res.body.servers.filter((s): s is string => typeof s === 'string' && isValidServerName(s)).slice(0, 20) : [];
    return { roomId: res.body.room_id, servers: servers.length ? servers : [server] };
  }

  // --- OutboundHooks (federation side) -------------------------------------------------

  async settled(roomId: string): Promise<void> {
    await this.inflight.get(roomId)?.catch(() => undefined);
  }

  async accepts(origin: string, roomId: string): Promise<boolean> {
    const t = federationsenderOutboundPeeks;
    const rows = await this.deps.db.select({ server: t.serverName }).from(t).where(eq(t.roomId, roomId));
    if (rows.length > 0) return rows.some((r) => r.server === origin);
    // No federated peek right now, but local devices still peek the room and one is being
    // (re)started: keep taking the host's events meanwhile, so none is lost in the gap.
    if (origin !== serverOf(roomId) && !(this.serversOf.get(roomId) ?? []).includes(origin)) return false;
    const devices = await this.deps.db
      .select({ r: syncapiPeeks.roomId })
      .from(syncapiPeeks)
      .where(and(eq(syncapiPeeks.roomId, roomId), isNull(syncapiPeeks.endedSeq)))
      .limit(1);
    return devices.length > 0;
  }

  async remoteExpired(origin: string, roomId: string, peekId: string): Promise<void> {
    const row = await this.outboundRow(roomId, origin);
    if (!row || row.peekId !== peekId) return;
    await this.end(roomId, origin, 'remote_deleted');
  }

  // --- internals -----------------------------------------------------------------------

  private async outboundRow(roomId: string, server: string) {
    const t = federationsenderOutboundPeeks;
    const [row] = await this.deps.db
      .select()
      .from(t)
      .where(and(eq(t.roomId, roomId), eq(t.serverName, server)));
    return row;
  }

  /** Whether this server peeks `roomId` over federation right now. */
  async live(roomId: string): Promise<boolean> {
    const rows = await this.deps.db.select({ r: federationsenderOutboundPeeks.roomId }).from(federationsenderOutboundPeeks).where(eq(federationsenderOutboundPeeks.roomId, roomId));
    return rows.length > 0;
  }

  private async startPeek(roomId: string, servers: string[], peekId = newPeekId()): Promise<void> {
    const candidates = [...new Set([...servers, serverOf(roomId)])].filter((s) => s !== this.deps.serverName);
    const failures: string[] = [];
    let refusal: MatrixError | undefined;
    for (const server of candidates) {
      try {
        await this.putPeek(roomId, server, peekId);
        this.serversOf.set(roomId, [server]);
        return;
      } catch (err) {
        if (err instanceof MatrixError && (err.status === 403 || err.status === 404 || err.errcode === 'M_INCOMPATIBLE_ROOM_VERSION')) {
          refusal ??= err;
        } else {
          this.deps.logger?.warn({ roomId, server, err: (err as Error).message }, 'could not start an outbound peek through this server');
          failures.push(`${server}: ${clientSafeReason(err)}`);
        }
      }
    }
    if (refusal) throw refusal;
    throw new MatrixError(502, 'M_UNKNOWN', `could not peek ${roomId} over federation: ${failures.join('; ') || 'no server to ask'}`);
  }

  /** PUT /peek on `server`; on success the snapshot is appended and the peek recorded. */
  private async putPeek(roomId: string, server: string, peekId: string): Promise<void> {
    const ver = SUPPORTED_ROOM_VERSIONS.map((v) => `ver=${v}`).join('&');
    const path = `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}?${ver}`;
    let res;
    try {
      res = await this.deps.client.request<Snapshot & { errcode?: string; error?: string }>(server, 'PUT', path, {});
    } catch (err) {
      throw new FederationUnreachableError((err as Error).message, { cause: err });
    }
    if (res.status !== 200) {
      const errcode = typeof res.body.errcode === 'string' ? res.body.errcode : 'M_UNKNOWN';
      const error = typeof res.body.error === 'string' ? res.body.error : `${server} answered ${res.status}`;
      if (res.status === 403 || res.status === 404 || errcode === 'M_INCOMPATIBLE_ROOM_VERSION') throw new MatrixError(res.status, errcode, error);
      throw new Error(`${server} answered ${res.status} ${errcode}`);
    }
    // A re-peek (ours lapsed, or ended while idle): the snapshot ends with the host's latest
    // event, and the events sent since the newest one we hold come before it.
    const snapshot = await this.checkSnapshot(roomId, res.body);
    const pdus = this.deps.history ? await this.deps.history.withMissingEvents(roomId, server, snapshot) : snapshot;
    const renewalIntervalMs = clampRenewalInterval(res.body.renewal_interval, 60 * 60_000);
    try {
      const result = await this.deps.bus.send({ type: 'StartOutboundPeek', roomId, server, peekId, renewalIntervalMs, pdus });
      await settled(this.deps.waitForProjections, result, 'all');
    } catch (err) {
      if (err instanceof DomainError) throw new MatrixError(err.code === 'forbidden' ? 403 : 502, err.code === 'forbidden' ? 'M_FORBIDDEN' : 'M_UNKNOWN', err.message);
      throw err;
    }
  }

  /** Every event of the snapshot must be for this room and pass its hash and signature checks. */
  private async checkSnapshot(roomId: string, body: Snapshot): Promise<ReceivedPdu[]> {
    const version = body.room_version;
    if (typeof version !== 'string' || !SUPPORTED_ROOM_VERSIONS.includes(version)) {
      throw new Error(`the snapshot's room version ${String(version)} is not one we understand`);
    }
    const raw: unknown[] = [];
    for (const list of [body.auth_chain, body.state, body.events]) if (Array.isArray(list)) raw.push(...list);
    if (body.latest_event) raw.push(body.latest_event);
    const byId = new Map<string, ReceivedPdu>();
    let latestId: string | undefined;
    for (const item of raw) {
      if ((item as { room_id?: unknown })?.room_id !== roomId) throw new Error('the snapshot holds an event of another room');
      const checked = await checkPdu(item, version, this.deps.keyRing);
      if (!checked.ok) throw new Error(`the snapshot failed its checks: ${checked.error}`);
      byId.set(checked.eventId, { eventId: checked.eventId, pdu: checked.pdu as Pdu });
      if (item === body.latest_event) latestId = checked.eventId;
    }
    const pdus = [...byId.values()];
    const create = pdus.find((p) => p.pdu.type === 'm.room.create' && p.pdu.state_key === '');
    if (!create) throw new Error('the snapshot has no m.room.create event');
    // The version the events were checked under must be the room's own (absent: "1").
    const createdAs = create.pdu.content['room_version'] ?? '1';
    if (createdAs !== version) throw new Error(`the snapshot says room version ${version}, its m.room.create ${JSON.stringify(createdAs)}`);
    const rank = (p: ReceivedPdu) => (p === create ? -1 : p.eventId === latestId ? Number.MAX_SAFE_INTEGER : p.pdu.depth);
    return pdus.sort((a, b) => rank(a) - rank(b));
  }

  /** Ends this server's peek of `roomId` through `server` (already ended: nothing to do). */
  async end(roomId: string, server: string, reason: 'unpeeked' | 'no_active_peekers' | 'remote_deleted' | 'rejected'): Promise<void> {
    try {
      const result = await this.deps.bus.send({ type: 'EndOutboundPeek', roomId, server, reason });
      await settled(this.deps.waitForProjections, result, 'all');
    } catch (err) {
      if (!(err instanceof BadStateError)) throw err;
    }
  }

  /**
   * Renews the peek of `roomId` through `server` (POST /renew, or a repeated PUT where the
   * host knows only the older draft). A host that no longer has the peek, or refuses it,
   * ends it here; a failure to reach it asks to be tried again well inside the interval.
   */
  async renew(roomId: string, server: string, peekId: string, intervalMs: number): Promise<RenewOutcome> {
    const retryInMs = Math.min(30_000, Math.max(250, intervalMs / 10));
    const path = `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}/renew`;
    let res;
    try {
      res = await this.deps.client.request<{ renewal_interval?: unknown; errcode?: string }>(server, 'POST', path, {}, Math.min(30_000, Math.max(1_000, intervalMs / 4)));
    } catch (err) {
      // Try again soon, but well inside the interval the host granted.
      this.deps.logger?.warn({ roomId, server, err: (err as Error).message }, 'could not renew an outbound peek; will retry');
      return { renewed: false, retryInMs };
    }
    if (res.status === 200) {
      const renewalIntervalMs = clampRenewalInterval(res.body.renewal_interval, 60 * 60_000);
      try {
        const result = await this.deps.bus.send({ type: 'RenewOutboundPeek', roomId, server, peekId, renewalIntervalMs });
        await settled(this.deps.waitForProjections, result, 'all');
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
      }
      return { renewed: true };
    }
    const errcode = typeof res.body.errcode === 'string' ? res.body.errcode : undefined;
    if (res.status === 405 || (res.status === 404 && errcode !== 'M_NOT_FOUND')) {
      // The host does not know /renew (the older draft): a repeated PUT renews there.
      const run = this.putPeek(roomId, server, peekId).catch(async (err) => {
        if (err instanceof MatrixError && (err.status === 403 || err.status === 404)) await this.end(roomId, server, 'rejected');
        else this.deps.logger?.warn({ roomId, server, err: (err as Error).message }, 'could not re-PUT an outbound peek; will retry');
      });
      this.inflight.set(
        roomId,
        run.finally(() => this.inflight.delete(roomId)),
      );
      await run;
      return { renewed: true };
    }
    if (res.status === 404) {
      // The host has no such peek any more (it expired it): end ours; the upkeep starts a
      // new one, under a new peek ID, while a peeking device is active.
      await this.end(roomId, server, 'remote_deleted');
      return { renewed: false };
    }
    if (res.status === 403) {
      await this.end(roomId, server, 'rejected');
      return { renewed: false };
    }
    this.deps.logger?.warn({ roomId, server, status: res.status }, 'the host refused to renew an outbound peek; will retry');
    return { renewed: false, retryInMs };
  }
}

/**
 * Why a request to another server failed, as a client may be told it: for a connection that
 * was refused or failed, only the kind of failure — never the addresses a name resolved to,
 * nor which ports answered (a client naming servers would otherwise map the network peekd
 * sits in). The whole message goes to the log.
 */
function clientSafeReason(err: unknown): string {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof OutboundRequestError) return OUTBOUND_FAILURES[e.reason];
  }
  return err instanceof FederationUnreachableError ? 'unreachable' : (err as Error).message;
}

const OUTBOUND_FAILURES: Record<OutboundFailure, string> = {
  'denied-address': 'not an address outbound federation may connect to',
  redirect: 'answered with a redirect, which is not followed',
  'too-large': 'answered with more than peekd reads',
  timeout: 'no answer in time',
  aborted: 'the request was aborted',
  unreachable: 'unreachable',
};
