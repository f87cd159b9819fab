// A read-only look at the lease bucket (shardLeases.ts): who holds each shard and job, and
// how long ago each lease was last written. Never writes, never creates the bucket.
//
// Keys: `shard.<n>` and `job.<name>` hold the holder's host ID; heartbeats are
// `<group>.<host id>` (`host.…` for room hosts, `jobs_<role>.…` for the others) holding
// the time they were written. A lease that is not renewed expires with the bucket's TTL,
// so a key that is listed is held; its entry's time is the last write (taken or renewed).
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Naming } from '../events/subjects.ts';

export interface LeaseHolding {
  /** The holder's host ID (`Peekd.hostId`). */
  owner: string;
  /** Milliseconds since the lease was last written (taken or renewed). */
  ageMs: number;
}

export interface Heartbeat {
  /** `host` (room hosts), `jobs_projections`, `jobs_federation`. */
  group: string;
  hostId: string;
  /** Milliseconds since the holder last wrote its heartbeat. */
  ageMs: number;
}

export interface LeaseMap {
  /** False when the bucket does not exist yet (no process with leases has started). */
  exists: boolean;
  shards: Map<number, LeaseHolding>;
  jobs: Map<string, LeaseHolding>;
  heartbeats: Heartbeat[];
}

/** How many keys are read at once. */
const PARALLEL_GETS = 32;

/** Reads every lease and heartbeat in the bucket as it is now. */
export async function readLeaseMap(nc: NatsConnection, naming: Naming, now: () => number = Date.now): Promise<LeaseMap> {
  const map: LeaseMap = { exists: true, shards: new Map(), jobs: new Map(), heartbeats: [] };
  let kv: KV;
  const keys: string[] = [];
  try {
    // `open` binds without creating: the bucket is made by the processes that hold leases.
    kv = await new Kvm(nc).open(naming.kvBucket('leases'));
    for await (const k of await kv.keys()) keys.push(k);
  } catch (err) {
    if (isMissingBucket(err)) return { ...map, exists: false };
    throw err;
  }
  for (let i = 0; i < keys.length; i += PARALLEL_GETS) {
    await Promise.all(
      keys.slice(i, i + PARALLEL_GETS).map(async (key) => {
        const entry = await kv.get(key);
        if (!entry || entry.operation !== 'PUT') return; // deleted or lapsed since it was listed
        const ageMs = Math.max(0, now() - entry.created.getTime());
        const dot = key.indexOf('.');
        const [group, rest] = [key.slice(0, dot), key.slice(dot + 1)];
        if (group === 'shard' && /^\d+$/.test(rest)) map.shards.set(Number(rest), { owner: entry.string(), ageMs });
        else if (group === 'job') map.jobs.set(rest, { owner: entry.string(), ageMs });
        else if (dot > 0) map.heartbeats.push({ group, hostId: rest, ageMs });
      }),
    );
  }
  map.heartbeats.sort((a, b) => a.group.localeCompare(b.group) || a.hostId.localeCompare(b.hostId));
  return map;
}

function isMissingBucket(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}
