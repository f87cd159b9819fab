// The upkeep of outbound peeks (MSC2444): while some local device that peeks a remote
// room keeps syncing, this server's federated peek of it is renewed; when no local device
// needs it any more (none peeks it, or none has synced for the idle window) it is ended;
// and when a peeking device syncs again after it ended, it is started again. One process
// runs this at a time (split, the `outbound_upkeep` job); the lifecycle of one peek
// (start, renew, end) is outboundPeeks.ts.
import { and, isNull, notLike } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Clock } from '../actors/roomActor.ts';
import { serverOf } from '../events/ids.ts';
import { MatrixError } from '../matrix/errors.ts';
import type { Db } from '../store/db.ts';
import { federationsenderOutboundPeeks, syncapiPeeks } from '../store/schema.ts';
import type { OutboundPeeks } from './outboundPeeks.ts';

/** A fresh outbound peek is not ended for want of device peeks this soon after it started. */
const START_GRACE_MS = 5_000;
const SYNC_CHECK_THROTTLE_MS = 2_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;
/** Devices whose last sync is remembered, and rooms whose retry is (least recently used forgotten first). */
const MAX_TRACKED = 100_000;

export interface UpkeepDeps {
  peeks: OutboundPeeks;
  db: Db;
  clock: Clock;
  serverName: string;
  outboundIdleMs: number;
  /** A device's live peek rows (SyncService: from the sync cache where there is one, else the table). */
  liveDevicePeeks(userId: string, deviceId: string): Promise<readonly { roomId: string }[]>;
  /** The same when they are at hand without a wait (the sync cache holds them); undefined otherwise. */
  liveDevicePeeksNow(userId: string, deviceId: string): readonly { roomId: string }[] | undefined;
  logger?: Logger;
}

export class OutboundUpkeep {
  /**
   * Per device: when it last synced, and when its peeks were last checked for a restart
   * (throttles the checks). One record, changed in place: a woken long-poll costs one
   * lookup here, not one per field (each is a few cache misses with 10,000 devices).
   */
  private readonly devices = new LRUCache<string, { syncedAt: number; checkedAt: number }>({ max: MAX_TRACKED });
  /** Per room: when a failed (re)start or renewal may be tried again, and the backoff. */
  private readonly retry = new LRUCache<string, { at: number; backoffMs: number }>({ max: MAX_TRACKED });
  private readonly startedAt: number;
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;

  constructor(private readonly deps: UpkeepDeps) {
    this.startedAt = deps.clock.now();
    deps.peeks.started.add((roomId) => this.retry.delete(roomId));
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
  }

  /** A device synced: its peeks of remote rooms stay wanted, and ended ones start again. */
  deviceSynced(userId: string, deviceId: string): void {
    const key = `${userId}\u0000${deviceId}`;
    const now = this.deps.clock.now();
    let seen = this.devices.get(key);
    if (seen) seen.syncedAt = now;
    else this.devices.set(key, (seen = { syncedAt: now, checkedAt: 0 }));
    // Restarts are the upkeep's business: only where it runs (split, one process at a time).
    if (!this.timer) return;
    if (now - seen.checkedAt < SYNC_CHECK_THROTTLE_MS) return;
    seen.checkedAt = now;
    // Most devices peek only rooms hosted here: nothing to restart, and no promise to make.
    const live = this.deps.liveDevicePeeksNow(userId, deviceId);
    if (live && live.every((r) => serverOf(r.roomId) === this.deps.serverName)) return;
    void this.restartFor(userId, deviceId).catch((err) => this.deps.logger?.warn({ err }, 'could not restart an outbound peek'));
  }

  /**
   * Renews each live outbound peek a third of the way into its interval (the host's
   * deadline and ours are the interval itself: there is time for two more tries); with
   * `devices`, also ends the ones no local device needs (or none has synced for the idle
   * window) and restarts the ones devices still need.
   */
  async tick(devices = true): Promise<void> {
    const { peeks } = this.deps;
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
        if (peeks.starting(row.roomId)) continue;
        const peeking = byRoom.get(row.roomId) ?? [];
        // A fresh outbound peek precedes its device peek: give that a moment to be recorded.
        if (now - row.createdAt < START_GRACE_MS) continue;
        if (peeking.length === 0) {
          await peeks.end(row.roomId, row.serverName, 'unpeeked');
          ended.add(row.roomId);
        } else if (!peeking.some((d) => this.isActive(d.userId, d.deviceId, d.renewedAt, now))) {
          await peeks.end(row.roomId, row.serverName, 'no_active_peekers');
          ended.add(row.roomId);
        }
      }
      // Device peeks whose federated peek is gone without a DELETE of ours (it timed out
      // here while the host was unreachable, the host expired or forgot it): while a
      // peeking device is active, peek again.
      const withOutbound = new Set(outbound.map((r) => r.roomId));
      for (const [roomId, peeking] of byRoom) {
        if (withOutbound.has(roomId) || peeks.starting(roomId)) continue;
        if ((this.retry.get(roomId)?.at ?? 0) > now || !peeking.some((d) => this.isActive(d.userId, d.deviceId, d.renewedAt, now))) continue;
        this.restart(roomId);
      }
    }
    for (const row of outbound) {
      if (ended.has(row.roomId) || peeks.starting(row.roomId)) continue;
      if (now >= row.renewedAt + row.renewalIntervalMs / 3 && (this.retry.get(row.roomId)?.at ?? 0) <= now) {
        const outcome = await peeks.renew(row.roomId, row.serverName, row.peekId, row.renewalIntervalMs);
        if (outcome.renewed || outcome.retryInMs === undefined) this.retry.delete(row.roomId);
        else this.retry.set(row.roomId, { at: this.deps.clock.now() + outcome.retryInMs, backoffMs: outcome.retryInMs });
      }
    }
  }

  private isActive(userId: string, deviceId: string, peekRenewedAt: number, now: number): boolean {
    const seen = Math.max(this.devices.get(`${userId}\u0000${deviceId}`)?.syncedAt ?? this.startedAt, peekRenewedAt);
    return now - seen < this.deps.outboundIdleMs;
  }

  /** Starts the federated peek of `roomId` again in the background, backing off on failure. */
  private restart(roomId: string): void {
    this.deps.peeks.ensureOutboundPeek(roomId, this.deps.peeks.restartServers(roomId)).catch((err) => {
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

  /** A device synced: restart outbound peeks its live peeks of remote rooms need. */
  private async restartFor(userId: string, deviceId: string): Promise<void> {
    for (const { roomId } of await this.deps.liveDevicePeeks(userId, deviceId)) {
      if (serverOf(roomId) === this.deps.serverName || this.deps.peeks.starting(roomId)) continue;
      if (await this.deps.peeks.live(roomId)) continue;
      this.restart(roomId);
    }
  }
}
