// Shard ownership for room hosts: leases in a NATS KV bucket whose entries expire unless
// renewed. Each host heartbeats, counts the live hosts, and holds about its share of the
// shards: it takes free ones (create = compare-and-set on an absent key), renews its own
// (update with the revision it holds), and lets go of extras so a new host gets some.
// A lease deleted by a host that stops is seen through a watch and taken at once.
// Two hosts briefly both serving a shard is harmless: appends with the expected last
// subject sequence, not leases, keep a room single-writer.
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { KvWatchInclude, Kvm, type KV, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Naming } from '../events/subjects';
import { isWrongLastSequence } from '../nats/errors';

export interface LeaseEvents {
  acquired(shard: number): void | Promise<void>;
  released(shard: number): void | Promise<void>;
}

interface Held {
  revision: number;
  /** When the lease was last written by us (taken or renewed): it lapses ttl after. */
  renewedAt: number;
}

export interface ShardLeaseOptions {
  ttlMs?: number;
  replicas?: number;
  logger?: Logger;
}

export class ShardLeases {
  private kv?: KV;
  private readonly owned = new Map<number, Held>();
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
    private readonly events: LeaseEvents,
    private readonly options: ShardLeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.logger = options.logger;
  }

  get shards(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  async start(): Promise<void> {
    this.kv = await new Kvm(this.nc).create(this.naming.kvBucket('leases'), { history: 1, ttl: this.ttlMs, replicas: this.options.replicas ?? 1 });
    await this.round();
    this.timer = setInterval(() => this.kick(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
    void this.watchReleases();
  }

  /** Runs a round now, or right after the one in progress. */
  private kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.round()
      .catch((err) => this.logger?.warn({ err }, 'shard lease round failed; trying again'))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** A lease deleted (a host handing its shards over) is claimed at once, not a round later. */
  private async watchReleases(): Promise<void> {
    while (!this.stopped) {
      try {
        const iter = await this.kv!.watch({ key: 'shard.>', include: KvWatchInclude.UpdatesOnly });
        this.watch = iter;
        for await (const e of iter as AsyncIterable<KvWatchEntry>) {
          if (this.stopped) break;
          if (e.operation === 'DEL' || e.operation === 'PURGE') this.kick();
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
    await this.running;
    if (!this.kv) return;
    for (const [shard, held] of this.owned) {
      await this.events.released(shard);
      await this.kv.delete(this.key(shard), { previousSeq: held.revision }).catch(() => undefined);
    }
    this.owned.clear();
    await this.kv.delete(`host.${this.hostId}`).catch(() => undefined);
  }

  private key(shard: number): string {
    return `shard.${shard}`;
  }

  private async liveHosts(): Promise<number> {
    let n = 0;
    for await (const k of await this.kv!.keys('host.*')) {
      void k;
      n++;
    }
    return Math.max(1, n);
  }

  private async lose(shard: number, why: string): Promise<void> {
    this.owned.delete(shard);
    this.logger?.info({ shard, why }, 'shard lease lost');
    await this.events.released(shard);
  }

  private async round(): Promise<void> {
    const kv = this.kv!;
    if (this.stopped) return;
    const now = Date.now();
    await kv.put(`host.${this.hostId}`, String(now));
    // Renew what we hold. Only a lease someone else wrote (a revision that moved on) is
    // lost at once; a timeout or a NATS hiccup is tried again next round, until the lease
    // would have lapsed anyway.
    for (const [shard, held] of [...this.owned]) {
      try {
        this.owned.set(shard, { revision: await kv.update(this.key(shard), this.hostId, held.revision), renewedAt: Date.now() });
      } catch (err) {
        if (isWrongRevision(err)) await this.lose(shard, 'another host holds it');
        else if (Date.now() - held.renewedAt >= this.ttlMs) await this.lose(shard, 'not renewed within its TTL');
        else this.logger?.warn({ err, shard }, 'could not renew a shard lease; trying again');
      }
    }
    const total = this.naming.shards;
    const target = Math.ceil(total / (await this.liveHosts()));
    // Hand back extras so newly arrived hosts get their share.
    while (this.owned.size > target) {
      const [shard, held] = [...this.owned].at(-1)!;
      this.owned.delete(shard);
      await this.events.released(shard);
      await kv.delete(this.key(shard), { previousSeq: held.revision }).catch(() => undefined);
    }
    if (this.owned.size >= target) return;
    const start = Math.floor(Math.random() * total);
    for (let i = 0; i < total && this.owned.size < target && !this.stopped; i++) {
      const shard = (start + i) % total;
      if (this.owned.has(shard)) continue;
      const revision = await this.claim(shard);
      if (revision === null) continue;
      this.owned.set(shard, { revision, renewedAt: Date.now() });
      await this.events.acquired(shard);
    }
  }

  /** Takes a free lease, or our own that we lost track of (a renewal whose answer was lost). */
  private async claim(shard: number): Promise<number | null> {
    const kv = this.kv!;
    try {
      return await kv.create(this.key(shard), this.hostId);
    } catch (err) {
      if (!isWrongRevision(err)) throw err;
    }
    const entry = await kv.get(this.key(shard));
    if (entry && entry.operation === 'PUT' && entry.string() === this.hostId) {
      try {
        return await kv.update(this.key(shard), this.hostId, entry.revision);
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
      }
    }
    return null; // held by another host
  }
}

/** The compare-and-set lost: someone else wrote the key (JetStream's wrong last sequence). */
function isWrongRevision(err: unknown): boolean {
  return isWrongLastSequence(err) || (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}
