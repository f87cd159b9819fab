// A projection is a value: a name, the stream it reads, the tables it owns, and an
// `apply` that folds a batch of events into those tables inside the runner's transaction.
import type { PeekEvent } from '../events/peekEvents';
import type { RoomEvent } from '../events/roomEvents';
import { eachEvent } from '../events/envelope';
import type { Naming, StreamKind } from '../events/subjects';
import type { Tx } from '../store/db';

export interface Projected<E> {
  /** The event's position: stream sequence × 1000 + index in its envelope (envelope.ts). */
  seq: number;
  roomId: string;
  shard: number;
  event: E;
}

export interface Projection<E = unknown> {
  name: string;
  stream: StreamKind;
  /** Tables this projection owns: truncated on rebuild, compared by verify. */
  tables: string[];
  /**
   * A delivery queue rather than a read model: what it holds is consumed as it is
   * delivered, so `replay` and `verify` leave it alone (a replay would re-send).
   */
  delivery?: boolean;
  /** The events of one log message (an envelope) by index; null for shapes this version does not know. */
  decode(data: Uint8Array): (E | null)[];
  apply(tx: Tx, batch: Projected<E>[]): Promise<void>;
}

export type PeekProjection = Projection<PeekEvent>;
export type RoomProjection = Projection<RoomEvent>;

/** The events of one log message as a projection sees them: positions, room and shard. */
export function projectedOf<E>(projection: Projection<E>, naming: Naming, m: { seq: number; subject: string; data: Uint8Array }): Projected<E>[] {
  const parsed = naming.parseRoomSubject(m.subject);
  if (!parsed) return [];
  const out: Projected<E>[] = [];
  eachEvent(m.seq, projection.decode(m.data), (event, seq) => out.push({ seq, roomId: parsed.roomId, shard: parsed.shard, event }));
  return out;
}
