import { jetstreamManager, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { STREAM_KINDS, shardsFromDescription, streamSpec } from '../events/streams.ts';
import type { Naming } from '../events/subjects.ts';
import { ShardCountMismatchError } from './errors.ts';

/**
 * Creates PEEKS and ROOMS if missing, with `replicas` copies; refuses a shard count that
 * differs from the recorded one. An existing stream keeps its replica count (raise it with
 * `nats stream edit`; JetStream moves the data).
 */
export async function ensureStreams(nc: NatsConnection, naming: Naming, replicas = 1): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for (const kind of STREAM_KINDS) {
    const spec = streamSpec(naming, kind, replicas);
    const existing = await streamInfo(jsm, spec.name);
    if (existing) {
      const recorded = shardsFromDescription(existing.config.description);
      if (recorded !== null && recorded !== naming.shards) {
        throw new ShardCountMismatchError(spec.name, naming.shards, recorded);
      }
      continue;
    }
    try {
      await jsm.streams.add({
        name: spec.name,
        subjects: spec.subjects,
        description: spec.description,
        storage: StorageType.File,
        num_replicas: spec.replicas,
        duplicate_window: nanos(spec.duplicateWindowMs),
        allow_direct: true,
        max_age: 0,
      });
    } catch (err) {
      // Another process created it between our look and our add: check it like above.
      const raced = await streamInfo(jsm, spec.name);
      if (!raced) throw err;
      const recorded = shardsFromDescription(raced.config.description);
      if (recorded !== null && recorded !== naming.shards) throw new ShardCountMismatchError(spec.name, naming.shards, recorded);
    }
  }
}

async function streamInfo(jsm: JetStreamManager, name: string) {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return null;
    throw err;
  }
}

/** Removes this deployment's streams and KV buckets (tests, and `peekd reset`). */
export async function deleteStreams(nc: NatsConnection, naming: Naming): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const names = [...STREAM_KINDS.map((k) => naming.streamName(k)), `KV_${naming.kvBucket('snapshots')}`, `KV_${naming.kvBucket('leases')}`];
  for (const name of names) {
    try {
      await jsm.streams.delete(name);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    }
  }
}
