// A projection is a value: a name, the stream it reads, the tables it owns, and an
// `apply` that folds a batch of events into those tables inside the runner's transaction.
import type { PeekEvent } from '../events/peekEvents';
import type { RoomEvent } from '../events/roomEvents';
import { eachEvent, throughSeq } from '../events/envelope';
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
  /**
   * The events of one log message (an envelope) by index; null for shapes this version does
   * not know. May throw on bytes that are no message at all. Either way `decodeMessage`
   * quarantines what could not be read.
   */
  decode(data: Uint8Array): (E | null)[];
  apply(tx: Tx, batch: Projected<E>[]): Promise<void>;
}

export type PeekProjection = Projection<PeekEvent>;
export type RoomProjection = Projection<RoomEvent>;

/**
 * A log message a projection cannot read in full: not JSON, an unknown envelope version,
 * events of shapes this version does not know, or not on a room subject. The runner records
 * it (projection_quarantine) in the transaction that moves the checkpoint past it.
 */
export interface Quarantined {
  /** The position through the whole message (`throughSeq`): the checkpoint that passes it. */
  seq: number;
  /** The JetStream stream's name, and the message's sequence and subject in it. */
  stream: string;
  streamSeq: number;
  subject: string;
  payload: Uint8Array;
  reason: string;
}

/** One log message as a projection sees it: the events it can read, and whether any part could not be. */
export interface DecodedMessage<E> {
  events: Projected<E>[];
  quarantined?: Quarantined;
}

/**
 * The events of one log message (positions, room and shard), and what of it cannot be read.
 * Never throws: a message that cannot be decoded is quarantined, so it can neither stall the
 * stream nor vanish without a trace. The events of an envelope that can be read are kept
 * even when others in it cannot (each event keeps its index, so positions stay put).
 */
export function decodeMessage<E>(projection: Projection<E>, naming: Naming, m: { seq: number; subject: string; data: Uint8Array }): DecodedMessage<E> {
  const quarantine = (reason: string, events: Projected<E>[] = []): DecodedMessage<E> => ({
    events,
    quarantined: { seq: throughSeq(m.seq), stream: naming.streamName(projection.stream), streamSeq: m.seq, subject: m.subject, payload: m.data, reason },
  });
  const parsed = naming.parseRoomSubject(m.subject);
  if (!parsed || parsed.kind !== projection.stream) return quarantine(`not a ${projection.stream} room subject`);
  let decoded: (E | null)[];
  try {
    decoded = projection.decode(m.data);
  } catch (err) {
    return quarantine(`cannot decode: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (decoded.length === 0) return quarantine('an envelope without events');
  const events: Projected<E>[] = [];
  eachEvent(m.seq, decoded, (event, seq) => events.push({ seq, roomId: parsed.roomId, shard: parsed.shard, event }));
  if (events.length === decoded.length) return { events };
  const unknown = decoded.flatMap((e, i) => (e === null ? [i] : []));
  return quarantine(whyUnknown(m.data, unknown), events);
}

/** Says what is wrong with a message that parsed as JSON but held shapes the decoder refused. */
function whyUnknown(data: Uint8Array, indexes: number[]): string {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return 'cannot decode';
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return `neither an envelope nor an event: JSON ${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value}`;
  const v = value as { envelope?: unknown; events?: unknown };
  if ('envelope' in v) {
    if (v.envelope !== 1) return `unknown envelope version ${JSON.stringify(v.envelope)}`;
    if (!Array.isArray(v.events)) return 'an envelope without an events list';
    return `event${indexes.length > 1 ? 's' : ''} ${indexes.join(', ')} of ${v.events.length}: ${indexes.map((i) => shapeOf(v.events as unknown[], i)).join('; ')}`;
  }
  return `a bare event of a shape this version does not know (${shapeOf([value], 0)})`;
}

function shapeOf(events: unknown[], index: number): string {
  const e = events[index] as { type?: unknown; v?: unknown } | null;
  if (e === null || typeof e !== 'object') return `not an object`;
  return `type ${JSON.stringify(e.type) ?? 'missing'}, v ${JSON.stringify(e.v) ?? 'missing'}`;
}
