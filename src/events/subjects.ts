// The only place that builds stream, subject, KV and consumer names.
//
//   PEEKS  <prefix>peeks.<shard>.<room>
//   ROOMS  <prefix>rooms.<shard>.<room>
//
// <room> is the room ID's UTF-8 bytes in unpadded base64url (room IDs contain '.',
// NATS's token separator); <shard> is fnv1a32(roomId) mod S, S fixed at stream creation.

export const DEFAULT_SHARDS = 64;
const PREFIX_RE = /^[A-Za-z0-9_-]{0,64}$/;

export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

export function roomToken(roomId: string): string {
  return Buffer.from(roomId, 'utf8').toString('base64url');
}

export function roomIdFromToken(token: string): string {
  return Buffer.from(token, 'base64url').toString('utf8');
}

export type StreamKind = 'peeks' | 'rooms';

/** Names for one deployment (one prefix, one shard count). */
export class Naming {
  readonly prefix: string;
  readonly shards: number;

  constructor(prefix: string, shards: number) {
    if (!PREFIX_RE.test(prefix)) throw new Error(`stream prefix must match ${PREFIX_RE}: ${JSON.stringify(prefix)}`);
    if (!Number.isInteger(shards) || shards < 1 || shards > 4096) throw new Error(`shard count must be 1..4096, got ${shards}`);
    this.prefix = prefix;
    this.shards = shards;
  }

  shardOf(roomId: string): number {
    return fnv1a32(roomId) % this.shards;
  }

  streamName(kind: StreamKind): string {
    return `${this.prefix}${kind.toUpperCase()}`;
  }

  /** The subject root, e.g. `peeks` or `t1_peeks`. */
  subjectRoot(kind: StreamKind): string {
    return `${this.prefix}${kind}`;
  }

  roomSubject(kind: StreamKind, roomId: string): string {
    return `${this.subjectRoot(kind)}.${this.shardOf(roomId)}.${roomToken(roomId)}`;
  }

  /** Every subject of one shard, e.g. `peeks.7.>`. */
  shardFilter(kind: StreamKind, shard: number): string {
    return `${this.subjectRoot(kind)}.${shard}.>`;
  }

  allSubjects(kind: StreamKind): string {
    return `${this.subjectRoot(kind)}.>`;
  }

  /** Parses a room subject back into its shard and room ID. */
  parseRoomSubject(subject: string): { kind: StreamKind; shard: number; roomId: string } | null {
    for (const kind of ['peeks', 'rooms'] as const) {
      const root = `${this.subjectRoot(kind)}.`;
      if (!subject.startsWith(root)) continue;
      const parts = subject.slice(root.length).split('.');
      const [shard, token] = parts;
      if (parts.length !== 2 || shard === undefined || token === undefined || !/^\d+$/.test(shard)) return null;
      if (Number(shard) >= this.shards || token === '') return null;
      return { kind, shard: Number(shard), roomId: roomIdFromToken(token) };
    }
    return null;
  }

  /** NATS request/reply subject for commands to a shard's owner. */
  commandSubject(shard: number): string {
    return `${this.prefix}peekd.cmd.${shard}`;
  }

  /** Core NATS subject on which projections announce new sync data (wake-ups). */
  wakeSubject(): string {
    return `${this.prefix}peekd.wake`;
  }

  /** Core NATS subject on which HTTP processes announce device syncs (outbound peek upkeep). */
  activitySubject(): string {
    return `${this.prefix}peekd.activity`;
  }

  kvBucket(name: 'meta' | 'leases' | 'snapshots'): string {
    return `${this.prefix}peekd_${name}`;
  }

  consumerName(name: string): string {
    return `${this.prefix}${name}`.replace(/[^A-Za-z0-9_-]/g, '_');
  }
}
