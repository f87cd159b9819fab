// Wakes rooms whose peeks are due, including passivated ones: reads the earliest
// deadlines from the projection tables and sends each due room a Tick.
import { and, isNull, lte, min, inArray, sql, type SQL } from 'drizzle-orm';
import type { PgColumn } from 'drizzle-orm/pg-core';
import type { Logger } from 'pino';
import type { Db } from '../store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, syncapiPeeks } from '../store/schema.ts';
import type { CommandBus } from './commandBus.ts';
import type { Clock } from './roomActor.ts';

export interface SchedulerOptions {
  /** Shards this host owns, read at every look (undefined: all). */
  shards?: () => number[];
  /** Longest sleep between looks at the tables. */
  pollMs?: number;
  logger?: Logger;
}

export class DeadlineScheduler {
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private running?: Promise<void>;

  constructor(
    private readonly db: Db,
    private readonly bus: CommandBus,
    private readonly clock: Clock,
    private readonly options: SchedulerOptions = {},
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Looks again now (e.g. after a command set an earlier deadline). */
  poke(): void {
    if (!this.stopped && !this.running) this.schedule(0);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.running = this.runOnce()
        .catch((err) => this.options.logger?.error({ err }, 'deadline scheduler failed'))
        .then((next) => {
          this.running = undefined;
          if (!this.stopped) this.schedule(next ?? this.options.pollMs ?? 1000);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Ticks every due room; returns how long to sleep before the next look. */
  async runOnce(): Promise<number> {
    const now = this.clock.now();
    const due = await this.dueRooms(now);
    await Promise.all([...due].map((roomId) => this.bus.send({ type: 'Tick', roomId }).catch((err) => this.options.logger?.warn({ err, roomId }, 'tick failed'))));
    const next = await this.nextDeadline();
    const poll = this.options.pollMs ?? 1000;
    if (next === null) return poll;
    return Math.max(5, Math.min(poll, next - this.clock.now() + 1));
  }

  private shardFilter(column: PgColumn): SQL | undefined {
    if (!this.options.shards) return undefined;
    const shards = this.options.shards();
    return shards.length > 0 ? inArray(column, shards) : sql`false`;
  }

  async dueRooms(now: number): Promise<Set<string>> {
    const rooms = new Set<string>();
    const device = await dueDevicePeekRooms(this.db, now, this.shardFilter(syncapiPeeks.shard));
    const inbound = await this.db
      .selectDistinct({ roomId: federationsenderInboundPeeks.roomId })
      .from(federationsenderInboundPeeks)
      .where(and(lte(federationsenderInboundPeeks.expiresAt, now), this.shardFilter(federationsenderInboundPeeks.shard)))
      .limit(1000);
    const outbound = await this.db
      .selectDistinct({ roomId: federationsenderOutboundPeeks.roomId })
      .from(federationsenderOutboundPeeks)
      .where(and(lte(federationsenderOutboundPeeks.expiresAt, now), this.shardFilter(federationsenderOutboundPeeks.shard)))
      .limit(1000);
    for (const r of [...device, ...inbound, ...outbound]) rooms.add(r.roomId);
    return rooms;
  }

  private async nextDeadline(): Promise<number | null> {
    const [a] = await nextDevicePeekDeadline(this.db, this.shardFilter(syncapiPeeks.shard));
    const [b] = await this.db
      .select({ at: min(federationsenderInboundPeeks.expiresAt) })
      .from(federationsenderInboundPeeks)
      .where(this.shardFilter(federationsenderInboundPeeks.shard));
    const [c] = await this.db
      .select({ at: min(federationsenderOutboundPeeks.expiresAt) })
      .from(federationsenderOutboundPeeks)
      .where(this.shardFilter(federationsenderOutboundPeeks.shard));
    const all = [a?.at, b?.at, c?.at].filter((x): x is number => x !== null && x !== undefined).map(Number);
    return all.length ? Math.min(...all) : null;
  }
}

/**
 * The scheduler's looks at device peeks: the live ones due by `now`, and the earliest
 * deadline of a live one. Ended peeks stay in the table for /sync; the partial index
 * `syncapi_peeks_due_idx` (live rows only) keeps both looks from reading them. Exported for
 * the tests that check their plans.
 */
export function dueDevicePeekRooms(db: Db, now: number, shards: SQL | undefined) {
  return db
    .selectDistinct({ roomId: syncapiPeeks.roomId })
    .from(syncapiPeeks)
    .where(and(isNull(syncapiPeeks.endedSeq), lte(syncapiPeeks.expiresAt, now), shards))
    .limit(1000);
}

export function nextDevicePeekDeadline(db: Db, shards: SQL | undefined) {
  return db
    .select({ at: min(syncapiPeeks.expiresAt) })
    .from(syncapiPeeks)
    .where(and(isNull(syncapiPeeks.endedSeq), shards));
}
