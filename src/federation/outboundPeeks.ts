// Outbound peeks (MSC2444): this server peeks a room hosted elsewhere because a local
// device peeks it. Starts the peek (checking the snapshot), renews it while some peeking
// device keeps syncing, ends it (and the host is sent a DELETE) when no local device
// needs it, and starts it again when such a device syncs again.
import { randomBytes } from 'node:crypto';
import { and, eq, isNull, notLike } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { CommandBus } from '../actors/commandBus';
import type { ReceivedPdu } from '../actors/commands';
import { BadStateError, DomainError } from '../actors/errors';
import type { Clock } from '../actors/roomActor';
import { isValidRoomId, isValidServerName, serverOf } from '../events/ids';
import type { Pdu } from '../events/roomEvents';
import type { Db } from '../store/db';
import { federationsenderOutboundPeeks, syncapiPeeks } from '../store/schema';
import { MatrixError } from '../http/errors';
import type { RemoteRooms } from '../http/client/context';
import { FederationUnreachableError, type FederationClient } from './client';
import type { OutboundHooks } from './context';
import type { KeyRing } from './keyRing';
import { checkPdu } from './verifyPdu';
import { settled } from '../projections/settled';

/** Room versions whose events we can check (reference-hash event IDs, known redaction rules). */
export const SUPPORTED_ROOM_VERSIONS = ['10', '9', '8', '7', '6', '5', '4', '3'];
export const MIN_RENEWAL_INTERVAL_MS = 1_000;
export const MAX_RENEWAL_INTERVAL_MS = 24 * 60 * 60_000;
/** A fresh outbound peek is not ended for want of device peeks this soon after it started. */
const START_GRACE_MS = 5_000;
const SYNC_CHECK_THROTTLE_MS = 2_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;
/** Devices whose last sync is remembered (the oldest are forgotten first). */
const MAX_TRACKED_DEVICES = 100_000;

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
  outboundIdleMs: number;
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all'): Promise<void>;
  /** A device's peek rows, from the sync cache where there is one (default: the table). */
  devicePeeks?(userId: string, deviceId: string): Promise<{ roomId: string; endedSeq: number | null }[]>;
  logger?: Logger;
}

export class OutboundPeeks implements RemoteRooms, OutboundHooks {
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly lastSync = new Map<string, number>();
  private readonly lastSyncCheck = new Map<string, number>();
  /** The servers a room was last peeked through (tried first when the peek restarts). */
  private readonly serversOf = new Map<string, string[]>();
  /** Per room: when a failed (re)start or renewal may be tried again, and the backoff. */
  private readonly retry = new Map<string, { at: number; backoffMs: number }>();
  private readonly startedAt: number;
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;

  constructor(private readonly deps: OutboundDeps) {
    this.startedAt = deps.clock.now();
  }

  /**
   * Renewals are looked at every `periodMs` (they may be due within a second: the host's
   * interval can be that short); what local devices need, every `devicesEvery` periods.
   */
  start(periodMs = 250, devicesEvery = 4): void {
    let n = 0;
    this.timer = setInterval(() => {
      if (this.ticking) return;
      const devices = n++ % devicesEvery === 0;
      this.ticking = this.tick(devices)
        .catch((err) => this.deps.logger?.warn({ err }, 'outbound peek upkeep failed'))
        .finally(() => (this.ticking = undefined));
    }, periodMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
    await Promise.allSettled([...this.inflight.values()]);
  }

  // --- RemoteRooms (client API side) ---------------------------------------------------

  async ensureOutboundPeek(roomId: string, servers: string[]): Promise<void> {
    const running = this.inflight.get(roomId);
    if (running) return running;
    // Registered before the first await, so concurrent callers share one start.
    const p: Promise<void> = (async () => {
      if (await this.liveOutbound(roomId)) return;
      await this.startPeek(roomId, servers);
      this.retry.delete(roomId);
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
      throw new MatrixError(502, 'M_UNKNOWN', `could not reach ${server} to resolve ${alias}: ${(err as Error).message}`);
    }
    if (res.status === 404) throw new MatrixError(404, 'M_NOT_FOUND', res.body.error ?? `unknown room alias ${alias}`);
    if (res.status !== 200 || typeof res.body.room_id !== 'string' || !isValidRoomId(res.body.room_id)) {
      throw new MatrixError(502, 'M_UNKNOWN', `${server} could not resolve ${alias} (${res.status})`);
    }
    const servers = Array.isArray(res.body.servers) ? res.body.servers.filter((s): s is string => typeof s === 'string' && isValidServerName(s)).slice(0, 20) : [];
    return { roomId: res.body.room_id, servers: servers.length ? servers : [server] };
  }

  deviceSynced(userId: string, deviceId: string): void {
    const key = `${userId}\u0000${deviceId}`;
    const now = this.deps.clock.now();
    this.lastSync.delete(key); // re-inserted: the map is in order of recency
    this.lastSync.set(key, now);
    if (this.lastSync.size > MAX_TRACKED_DEVICES) this.lastSync.delete(this.lastSync.keys().next().value!);
    // Restarts are the upkeep's business: only where it runs (split, one process at a time).
    if (!this.timer) return;
    if (now - (this.lastSyncCheck.get(key) ?? 0) < SYNC_CHECK_THROTTLE_MS) return;
    this.lastSyncCheck.set(key, now);
    if (this.lastSyncCheck.size > MAX_TRACKED_DEVICES) this.lastSyncCheck.delete(this.lastSyncCheck.keys().next().value!);
    void this.restartFor(userId, deviceId).catch((err) => this.deps.logger?.warn({ err }, 'could not restart an outbound peek'));
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
    const [row] = await this.deps.db.select().from(t).where(and(eq(t.roomId, roomId), eq(t.serverName, server)));
    return row;
  }

  private async liveOutbound(roomId: string): Promise<boolean> {
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
          failures.push(`${server}: ${(err as Error).message}`);
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
      throw new FederationUnreachableError((err as Error).message);
    }
    if (res.status !== 200) {
      const errcode = typeof res.body.errcode === 'string' ? res.body.errcode : 'M_UNKNOWN';
      const error = typeof res.body.error === 'string' ? res.body.error : `${server} answered ${res.status}`;
      if (res.status === 403 || res.status === 404 || errcode === 'M_INCOMPATIBLE_ROOM_VERSION') throw new MatrixError(res.status, errcode, error);
      throw new Error(`${server} answered ${res.status} ${errcode}`);
    }
    const pdus = await this.checkSnapshot(roomId, res.body);
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
    for (const item of raw) {
      if ((item as { room_id?: unknown })?.room_id !== roomId) throw new Error('the snapshot holds an event of another room');
      const checked = await checkPdu(item, version, this.deps.keyRing);
      if (!checked.ok) throw new Error(`the snapshot failed its checks: ${checked.error}`);
      byId.set(checked.eventId, { eventId: checked.eventId, pdu: checked.pdu as Pdu });
    }
    const pdus = [...byId.values()];
    const create = pdus.find((p) => p.pdu.type === 'm.room.create' && p.pdu.state_key === '');
    if (!create) throw new Error('the snapshot has no m.room.create event');
    const latestId = [...byId.values()].find((p) => p.pdu === (body.latest_event as Pdu))?.eventId;
    const rank = (p: ReceivedPdu) => (p === create ? -1 : p.eventId === latestId ? Number.MAX_SAFE_INTEGER : p.pdu.depth);
    return pdus.sort((a, b) => rank(a) - rank(b));
  }

  private async end(roomId: string, server: string, reason: 'unpeeked' | 'no_active_peekers' | 'remote_deleted' | 'rejected'): Promise<void> {
    try {
      const result = await this.deps.bus.send({ type: 'EndOutboundPeek', roomId, server, reason });
      await settled(this.deps.waitForProjections, result, 'all');
    } catch (err) {
      if (!(err instanceof BadStateError)) throw err;
    }
  }

  private isActive(userId: string, deviceId: string, peekRenewedAt: number, now: number): boolean {
    const seen = Math.max(this.lastSync.get(`${userId}\u0000${deviceId}`) ?? this.startedAt, peekRenewedAt);
    return now - seen < this.deps.outboundIdleMs;
  }

  /**
   * Renews each live outbound peek a third of the way into its interval (the host's
   * deadline and ours are the interval itself: there is time for two more tries); with
   * `devices`, also ends the ones no local device needs (or none has synced for the idle
   * window) and restarts the ones devices still need.
   */
  async tick(devices = true): Promise<void> {
    const now = this.deps.clock.now();
    const outbound = await this.deps.db.select().from(federationsenderOutboundPeeks);
    const ended = new Set<string>();
    if (devices) {
      // Live device peeks of rooms hosted elsewhere, by room.
      const rows = await this.deps.db
        .select({ roomId: syncapiPeeks.roomId, userId: syncapiPeeks.userId, deviceId: syncapiPeeks.deviceId, renewedAt: syncapiPeeks.renewedAt })
        .from(syncapiPeeks)
        .where(and(isNull(syncapiPeeks.endedSeq), notLike(syncapiPeeks.roomId, `%:${this.deps.serverName}`)));
      const byRoom = new Map<string, typeof rows>();
      for (const r of rows) byRoom.set(r.roomId, [...(byRoom.get(r.roomId) ?? []), r]);
      for (const row of outbound) {
        if (this.inflight.has(row.roomId)) continue;
        const peeking = byRoom.get(row.roomId) ?? [];
        // A fresh outbound peek precedes its device peek: give that a moment to be recorded.
        if (now - row.createdAt < START_GRACE_MS) continue;
        if (peeking.length === 0) {
          await this.end(row.roomId, row.serverName, 'unpeeked');
          ended.add(row.roomId);
        } else if (!peeking.some((d) => this.isActive(d.userId, d.deviceId, d.renewedAt, now))) {
          await this.end(row.roomId, row.serverName, 'no_active_peekers');
          ended.add(row.roomId);
        }
      }
      // Device peeks whose federated peek is gone without a DELETE of ours (it timed out
      // here while the host was unreachable, the host expired or forgot it): while a
      // peeking device is active, peek again.
      const withOutbound = new Set(outbound.map((r) => r.roomId));
      for (const [roomId, peeking] of byRoom) {
        if (withOutbound.has(roomId) || this.inflight.has(roomId)) continue;
        if ((this.retry.get(roomId)?.at ?? 0) > now || !peeking.some((d) => this.isActive(d.userId, d.deviceId, d.renewedAt, now))) continue;
        this.restart(roomId);
      }
    }
    for (const row of outbound) {
      if (ended.has(row.roomId) || this.inflight.has(row.roomId)) continue;
      if (now >= row.renewedAt + row.renewalIntervalMs / 3 && (this.retry.get(row.roomId)?.at ?? 0) <= now) {
        await this.renew(row.roomId, row.serverName, row.peekId, row.renewalIntervalMs);
      }
    }
  }

  /** Starts the federated peek of `roomId` again in the background, backing off on failure. */
  private restart(roomId: string): void {
    const servers = [...(this.serversOf.get(roomId) ?? []), serverOf(roomId)];
    this.ensureOutboundPeek(roomId, servers).catch((err) => {
      // A host that refuses the room (403/404) is asked again only rarely.
      if (err instanceof MatrixError && (err.status === 403 || err.status === 404)) this.retry.set(roomId, { at: this.deps.clock.now() + RETRY_MAX_MS, backoffMs: RETRY_MAX_MS });
      else this.backOff(roomId);
      this.deps.logger?.warn({ roomId, err: (err as Error).message }, 'could not restart an outbound peek; will retry');
    });
  }

  private backOff(roomId: string): void {
    const prev = this.retry.get(roomId)?.backoffMs ?? 0;
    const backoffMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, prev * 2));
    this.retry.set(roomId, { at: this.deps.clock.now() + backoffMs, backoffMs });
  }

  private async renew(roomId: string, server: string, peekId: string, intervalMs: number): Promise<void> {
    const path = `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}/renew`;
    let res;
    try {
      res = await this.deps.client.request<{ renewal_interval?: unknown; errcode?: string }>(server, 'POST', path, {}, Math.min(30_000, Math.max(1_000, intervalMs / 4)));
    } catch (err) {
      // Try again soon, but well inside the interval the host granted.
      const backoffMs = Math.min(30_000, Math.max(250, intervalMs / 10));
      this.retry.set(roomId, { at: this.deps.clock.now() + backoffMs, backoffMs });
      this.deps.logger?.warn({ roomId, server, err: (err as Error).message }, 'could not renew an outbound peek; will retry');
      return;
    }
    if (res.status === 200) {
      this.retry.delete(roomId);
      const renewalIntervalMs = clampRenewalInterval(res.body.renewal_interval, 60 * 60_000);
      try {
        const result = await this.deps.bus.send({ type: 'RenewOutboundPeek', roomId, server, peekId, renewalIntervalMs });
        await settled(this.deps.waitForProjections, result, 'all');
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
      }
      return;
    }
    const errcode = typeof res.body.errcode === 'string' ? res.body.errcode : undefined;
    if (res.status === 405 || (res.status === 404 && errcode !== 'M_NOT_FOUND')) {
      // The host does not know /renew (the older draft): a repeated PUT renews there.
      const run = this.putPeek(roomId, server, peekId).catch(async (err) => {
        if (err instanceof MatrixError && (err.status === 403 || err.status === 404)) await this.end(roomId, server, 'rejected');
        else this.deps.logger?.warn({ roomId, server, err: (err as Error).message }, 'could not re-PUT an outbound peek; will retry');
      });
      this.inflight.set(roomId, run.finally(() => this.inflight.delete(roomId)));
      await run;
      return;
    }
    if (res.status === 404) {
      // The host has no such peek any more (it expired it): end ours; the upkeep starts a
      // new one, under a new peek ID, while a peeking device is active.
      await this.end(roomId, server, 'remote_deleted');
      return;
    }
    if (res.status === 403) {
      await this.end(roomId, server, 'rejected');
      return;
    }
    const backoffMs = Math.min(30_000, Math.max(250, intervalMs / 10));
    this.retry.set(roomId, { at: this.deps.clock.now() + backoffMs, backoffMs });
    this.deps.logger?.warn({ roomId, server, status: res.status }, 'the host refused to renew an outbound peek; will retry');
  }

  /** A device synced: restart outbound peeks its live peeks of remote rooms need. */
  private async restartFor(userId: string, deviceId: string): Promise<void> {
    const rows = this.deps.devicePeeks
      ? (await this.deps.devicePeeks(userId, deviceId)).filter((r) => r.endedSeq === null)
      : await this.deps.db
          .select({ roomId: syncapiPeeks.roomId })
          .from(syncapiPeeks)
          .where(and(eq(syncapiPeeks.userId, userId), eq(syncapiPeeks.deviceId, deviceId), isNull(syncapiPeeks.endedSeq)));
    for (const { roomId } of rows) {
      if (serverOf(roomId) === this.deps.serverName || this.inflight.has(roomId)) continue;
      if (await this.liveOutbound(roomId)) continue;
      this.restart(roomId);
    }
  }
}
