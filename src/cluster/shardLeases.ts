// Ownership of work by leases in a NATS KV bucket whose entries expire unless renewed:
// room hosts hold shards (`shard.<n>`), and the projections and federation roles hold
// jobs (`job.<name>`: one projection runner, the federation sender, outbound upkeep), so
// exactly one process runs each. Each holder heartbeats under its group, counts the live
// holders, and holds about its share of the items: it takes free ones (create = compare-
// and-set on an absent key), renews its own (update with the revision it holds), and lets
// go of extras so a new process gets some. A lease deleted by a process that stops is seen
// through a watch and taken at once. Two hosts briefly both serving a shard is harmless:
// appends with the expected last subject sequence, not leases, keep a room single-writer.
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { KvWatchInclude, Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Naming } from '../events/subjects.ts';
import { isWrongLastSequence, retryTransient } from '../nats/errors.ts';

export interface LeaseEvents<K> {
  acquired(item: K): void | Promise<void>;
  released(item: K): void | Promise<void>;
}

interface Held {
  revision: number;
  /** When the lease was last written by us (taken or renewed): it lapses ttl after. */
  renewedAt: number;
}

export interface LeaseOptions {
  ttlMs?: number;
  replicas?: number;
  logger?: Logger;
}

/** What a lease group is made of: its items, and how an item is named in the bucket. */
interface LeaseGroup<K> {
  /** Heartbeat keys of this group's live holders are `<group>.<holder id>`. */
  group: string;
  items: readonly K[];
  key(item: K): string;
}

export class Leases<K> {
  private kv?: KV;
  private readonly owned = new Map<K, Held>();
  /** Heartbeat key → when it was last seen written (local clock). */
  private readonly seen = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  private watch?: { stop(): void };
  private readonly ttlMs: number;
  private readonly logger?: Logger;

  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    readonly hostId: string,
    private readonly what: LeaseGroup<K>,
    private readonly events: LeaseEvents<K>,
    private readonly options: LeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.logger = options.logger;
  }

  /** The items held now. */
  get held(): K[] {
    return [...this.owned.keys()];
  }

  async start(): Promise<void> {
    this.kv = await retryTransient(() => new Kvm(this.nc).create(this.naming.kvBucket('leases'), { history: 1, ttl: this.ttlMs, replicas: this.options.replicas ?? 1 }));
    // The live holders are followed through a watch on their heartbeats (no key listing
    // each round), seeded once from the keys there are now.
    for await (const k of await this.kv.keys(`${this.what.group}.*`)) this.seen.set(k, Date.now());
    void this.follow();
    await this.round();
    this.timer = setInterval(() => this.kick(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /** Runs a round now, or right after the one in progress. */
  private kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.round()
      .catch((err) => this.logger?.warn({ err }, 'lease round failed; trying again'))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /**
   * Follows the bucket: heartbeats of this group's holders (who is alive), and deleted
   * leases of our items (a process handing its work over), which are claimed at once.
   */
  private async follow(): Promise<void> {
    const heartbeat = `${this.what.group}.`;
    const ours = new Set(this.what.items.map((i) => this.what.key(i)));
    while (!this.stopped) {
      try {
        const iter = await this.kv!.watch({ key: '>', include: KvWatchInclude.UpdatesOnly });
        this.watch = iter;
        for await (const e of iter as AsyncIterable<KvWatchEntry>) {
          if (this.stopped) break;
          const gone = e.operation === 'DEL' || e.operation === 'PURGE';
          if (e.key.startsWith(heartbeat)) {
            if (gone) this.seen.delete(e.key);
            else this.seen.set(e.key, Date.now());
          } else if (gone && ours.has(e.key)) {
            this.kick();
          }
        }
      } catch (err) {
        if (this.stopped) return;
        this.logger?.debug({ err }, 'lease watch ended; watching again');
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Gives every shard back (a clean shutdown hands them over at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.watch?.stop();
    // A round stuck on a NATS call must not hold the stop past a lease's lifetime.
    await Promise.race([this.running, new Promise((r) => setTimeout(r, this.ttlMs).unref())]);
    if (!this.kv) return;
    for (const [item, held] of this.owned) {
      await this.events.released(item);
      await this.kv.delete(this.key(item), { previousSeq: held.revision }).catch(() => undefined);
    }
    this.owned.clear();
    await this.kv.delete(this.heartbeatKey).catch(() => undefined);
  }

  private key(item: K): string {
    return this.what.key(item);
  }

  private get heartbeatKey(): string {
    return `${this.what.group}.${this.hostId}`;
  }

  /** Holders whose heartbeat was seen within the TTL (this one included). */
  private liveHosts(): number {
    const now = Date.now();
    this.seen.set(this.heartbeatKey, now);
    let n = 0;
    for (const [key, at] of this.seen) {
      if (now - at < this.ttlMs) n++;
      else this.seen.delete(key);
    }
    return n;
  }

  private async lose(item: K, why: string): Promise<void> {
    this.owned.delete(item);
    this.logger?.info({ lease: this.key(item), why }, 'lease lost');
    await this.events.released(item);
  }

  private async round(): Promise<void> {
    const kv = this.kv!;
    if (this.stopped) return;
    const now = Date.now();
    // Cut off from NATS, the heartbeat fails, and so will the renewals below; they still
    // run, so that what can no longer be renewed is let go once its lease has lapsed (the
    // federation sender, which needs only Postgres, must not go on beside a successor).
    // Every call is bounded well inside the TTL, and they run side by side.
    const timeout = Math.max(250, Math.floor(this.ttlMs / 4));
    let reachable = true;
    const heartbeat = kv.put(this.heartbeatKey, String(now), { timeout }).catch((err) => {
      reachable = false;
      this.logger?.warn({ err }, 'lease heartbeat failed');
    });
    // Renew what we hold. A lease someone else wrote (a revision that moved on) is lost at
    // once. After a timeout or a NATS hiccup it is let go only once half its life is gone:
    // rather a short gap than two holders (a later round takes our own key back if it is
    // still ours).
    await Promise.all([
      heartbeat,
      ...[...this.owned].map(async ([item, held]) => {
        try {
          const revision = await kv.update(this.key(item), this.hostId, held.revision, timeout);
          if (this.owned.get(item) === held) this.owned.set(item, { revision, renewedAt: Date.now() });
        } catch (err) {
          if (this.owned.get(item) !== held) return;
          if (isWrongRevision(err)) await this.lose(item, 'another process holds it');
          else if (Date.now() - held.renewedAt >= this.ttlMs / 2) await this.lose(item, 'could not be renewed in time');
          else this.logger?.warn({ err, lease: this.key(item) }, 'could not renew a lease; trying again');
        }
      }),
    ]);
    if (!reachable) return;
    const total = this.what.items.length;
    const target = Math.ceil(total / this.liveHosts());
    // Hand back extras so newly arrived processes get their share.
    while (this.owned.size > target) {
      const [item, held] = [...this.owned].at(-1)!;
      this.owned.delete(item);
      await this.events.released(item);
      await kv.delete(this.key(item), { previousSeq: held.revision }).catch(() => undefined);
    }
    if (this.owned.size >= target) return;
    const start = Math.floor(Math.random() * total);
    for (let i = 0; i < total && this.owned.size < target && !this.stopped; i++) {
      const item = this.what.items[(start + i) % total]!;
      if (this.owned.has(item)) continue;
      const revision = await this.claim(item);
      if (revision === null) continue;
      if (this.stopped) {
        await kv.delete(this.key(item), { previousSeq: revision }).catch(() => undefined);
        return;
      }
      this.owned.set(item, { revision, renewedAt: Date.now() });
      await this.events.acquired(item);
    }
  }

  /** Takes a free lease, or our own that we lost track of (a renewal whose answer was lost). */
  private async claim(item: K): Promise<number | null> {
    const kv = this.kv!;
    try {
      return await kv.create(this.key(item), this.hostId);
    } catch (err) {
      if (!isWrongRevision(err)) throw err;
    }
    const entry = await kv.get(this.key(item));
    if (entry && entry.operation === 'PUT' && entry.string() === this.hostId) {
      try {
        return await kv.update(this.key(item), this.hostId, entry.revision);
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
      }
    }
    return null; // held by another host
  }
}

/** Room hosts' shards. */
export class ShardLeases extends Leases<number> {
  constructor(nc: NatsConnection, naming: Naming, hostId: string, events: LeaseEvents<number>, options: LeaseOptions = {}) {
    super(nc, naming, hostId, { group: 'host', items: Array.from({ length: naming.shards }, (_, i) => i), key: (shard) => `shard.${shard}` }, events, options);
  }

  get shards(): number[] {
    return this.held.sort((a, b) => a - b);
  }
}

/** Named jobs that exactly one process may run at a time (projections, federation sender and upkeep). */
export class JobLeases extends Leases<string> {
  /** `role`: the processes that may run these jobs share them (one group per role). */
  constructor(nc: NatsConnection, naming: Naming, hostId: string, role: string, jobs: readonly string[], events: LeaseEvents<string>, options: LeaseOptions = {}) {
    super(nc, naming, hostId, { group: `jobs_${role}`, items: jobs, key: (job) => `job.${job}` }, events, options);
  }
}

/** The compare-and-set lost: someone else wrote the key (JetStream's wrong last sequence). */
function isWrongRevision(err: unknown): boolean {
  return isWrongLastSequence(err) || (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}
