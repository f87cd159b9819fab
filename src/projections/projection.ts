// A projection is a value: a name, the stream it reads, the tables it owns, and an
// `apply` that folds a batch of events into those tables inside the runner's transaction.
import type { PeekEvent } from '../events/peekEvents';
import type { RoomEvent } from '../events/roomEvents';
import type { StreamKind } from '../events/subjects';
import type { Tx } from '../store/db';

export interface Projected<E> {
  /** Stream sequence. */
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
  decode(data: Uint8Array): E | null;
  apply(tx: Tx, batch: Projected<E>[]): Promise<void>;
}

export type PeekProjection = Projection<PeekEvent>;
export type RoomProjection = Projection<RoomEvent>;
