// Shard ownership for room hosts: leases in a NATS KV bucket whose entries expire unless
// renewed. Each host heartbeats, counts the live hosts, and holds about its share of the
// shards: it takes free ones (create = compare-and-set on an absent key), renews its own
// (update with the revision it holds), and lets go of extras so a new host gets some.
// Two hosts briefly both serving a shard is harmless: appends with the expected last
// subject sequence, not leases, keep a room single-writer.
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Naming } from '../events/subjects';

export interface LeaseEvents {
  acquired(shard: number): void | Promise<void>;
  released(shard: number): void | Promise<void>;
}

export class ShardLeases {
  private kv?: KV;
  private readonly owned = new Map<number, number>(); // shard → revision
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    readonly hostId: string,
    private readonly events: LeaseEvents,
    private readonly ttlMs = 10_000,
    private readonly logger?: Logger,
  ) {}

  get shards(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  async start(): Promise<void> {
    this.kv = await new Kvm(this.nc).create(this.naming.kvBucket('leases'), { history: 1, ttl: this.ttlMs });
    await this.round();
    this.timer = setInterval(() => {
      if (!this.running) this.running = this.round().catch((err) => this.logger?.warn({ err }, 'shard lease round failed')).finally(() => (this.running = undefined));
    }, Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /** Gives every shard back (a clean shutdown hands them over at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    if (!this.kv) return;
    for (const [shard, revision] of this.owned) {
      await this.kv.delete(this.key(shard), { previousSeq: revision }).catch(() => undefined);
      await this.events.released(shard);
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

  private async round(): Promise<void> {
    const kv = this.kv!;
    if (this.stopped) return;
    await kv.put(`host.${this.hostId}`, String(Date.now()));
    // Renew what we hold; a failed update means the lease lapsed and someone took it.
    for (const [shard, revision] of [...this.owned]) {
      try {
        this.owned.set(shard, await kv.update(this.key(shard), this.hostId, revision));
      } catch {
        this.owned.delete(shard);
        await this.events.released(shard);
      }
    }
    const total = this.naming.shards;
    const target = Math.ceil(total / (await this.liveHosts()));
    // Hand back extras so newly arrived hosts get their share.
    while (this.owned.size > target) {
      const [shard, revision] = [...this.owned].at(-1)!;
      this.owned.delete(shard);
      await this.events.released(shard);
      await kv.delete(this.key(shard), { previousSeq: revision }).catch(() => undefined);
    }
    if (this.owned.size >= target) return;
    const start = Math.floor(Math.random() * total);
    for (let i = 0; i < total && this.owned.size < target; i++) {
      const shard = (start + i) % total;
      if (this.owned.has(shard)) continue;
      try {
        const revision = await kv.create(this.key(shard), this.hostId);
        this.owned.set(shard, revision);
        await this.events.acquired(shard);
      } catch {
        // held by another host
      }
    }
  }
}
