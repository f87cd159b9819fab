// Stream configuration for PEEKS and ROOMS. The shard count is recorded in the stream's
// description at creation, so a later start with another count can be refused.
import type { Naming, StreamKind } from './subjects.ts';

export const STREAM_KINDS: readonly StreamKind[] = ['peeks', 'rooms'];

/** How long JetStream remembers a Nats-Msg-Id for duplicate detection. */
export const DUPLICATE_WINDOW_MS = 2 * 60 * 1000;

export interface StreamSpec {
  name: string;
  subjects: string[];
  description: string;
  duplicateWindowMs: number;
  replicas: number;
}

export function streamSpec(naming: Naming, kind: StreamKind, replicas = 1): StreamSpec {
  return {
    name: naming.streamName(kind),
    subjects: [naming.allSubjects(kind)],
    description: describeShards(naming.shards),
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    replicas,
  };
}

export function describeShards(shards: number): string {
  return `peekd shards=${shards}`;
}

/** The shard count recorded in a stream description, or null if there is none. */
export function shardsFromDescription(description: string | undefined): number | null {
  const m = description?.match(/\bshards=(\d+)\b/);
  return m ? Number(m[1]) : null;
}

/** `Nats-Msg-Id` of a command's envelope on one stream: one envelope per command and stream. */
export function messageId(kind: StreamKind, commandId: string): string {
  return `${kind}:${commandId}`;
}
