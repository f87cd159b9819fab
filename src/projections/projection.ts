// A projection is a value: a name, the stream it reads, the tables it owns, and an
// `apply` that folds a batch of events into those tables inside the runner's transaction.
import type { PeekEvent } from '../events/peekEvents.ts';
import type { RoomEvent } from '../events/roomEvents.ts';
import { position, throughSeq } from '../events/envelope.ts';
import type { Naming, StreamKind } from '../events/subjects.ts';
import type { Tx } from '../store/db.ts';

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
  /**
   * False when `apply` would change nothing for this event (a federation projection and a
   * device peek). A batch of only such events commits no transaction: the runner moves its
   * position in memory and writes the checkpoint with its next write, or within
   * CHECKPOINT_LAG_MS. Unset: every event may matter.
   */
  touches?(event: E): boolean;
  /**
   * False when no event in a log message with these bytes can be one `touches` takes,
   * judged on the raw bytes before any decoding (a byte search). Such a message is passed
   * over: not decoded for this projection, nor quarantined by it, whichever way it is read
   * (the shared feed, a read of its own, a rebuild), so live and rebuilt tables and
   * quarantines agree. Never false for a message holding an event `touches` would take.
   * Unset: every message is decoded.
   */
  mayTouch?(data: Uint8Array): boolean;
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

/** What decoding a message depends on: projections alike in both share one decoding of it. */
export type Decoder<E> = Pick<Projection<E>, 'stream' | 'decode'>;

/**
 * The events of one log message (positions, room and shard), and what of it cannot be read.
 * Never throws: a message that cannot be decoded is quarantined, so it can neither stall the
 * stream nor vanish without a trace. The events of an envelope that can be read are kept
 * even when others in it cannot (each event keeps its index, so positions stay put).
 *
 * The result depends only on the message and on `decoder`'s stream and decode function, never
 * on the projection: one decoding serves every projection that reads the stream alike (the
 * runners' shared feed, a rebuild of several projections). Readers must not change it.
 */
export function decodeMessage<E>(decoder: Decoder<E>, naming: Naming, m: { seq: number; subject: string; data: Uint8Array }): DecodedMessage<E> {
  const parsed = roomSubjectOf(naming, m.subject);
  if (!parsed || parsed.kind !== decoder.stream) return quarantine(decoder, naming, m, `not a ${decoder.stream} room subject`);
  let decoded: (E | null)[];
  try {
    decoded = decoder.decode(m.data);
  } catch (err) {
    return quarantine(decoder, naming, m, `cannot decode: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (decoded.length === 0) return quarantine(decoder, naming, m, 'an envelope without events');
  const events: Projected<E>[] = [];
  const { roomId, shard } = parsed;
  // Positions as eachEvent (envelope.ts) gives them, without a closure per message.
  for (let i = 0; i < decoded.length; i++) {
    const event = decoded[i] as E | null;
    if (event !== null) events.push({ seq: position(m.seq, i), roomId, shard, event });
  }
  if (events.length === decoded.length) return { events };
  const unknown = decoded.flatMap((e, i) => (e === null ? [i] : []));
  return quarantine(decoder, naming, m, whyUnknown(m.data, unknown), events);
}

/** What a projection takes from a message it passes over (Projection.mayTouch): nothing but the position. */
const PASSED_OVER: DecodedMessage<never> = Object.freeze({ events: Object.freeze([]) as unknown as never[] });

/**
 * The message as `projection` takes it: `decoded` (decodeMessage's result, made only when
 * needed: it may be shared with other projections), or nothing when the projection passes
 * it over (mayTouch false for its bytes).
 */
export function takeMessage<E>(projection: Projection<E>, data: Uint8Array, decoded: () => DecodedMessage<E>): DecodedMessage<E> {
  return projection.mayTouch && !projection.mayTouch(data) ? PASSED_OVER : decoded();
}

function quarantine<E>(decoder: Decoder<E>, naming: Naming, m: { seq: number; subject: string; data: Uint8Array }, reason: string, events: Projected<E>[] = []): DecodedMessage<E> {
  return {
    events,
    quarantined: { seq: throughSeq(m.seq), stream: naming.streamName(decoder.stream), streamSeq: m.seq, subject: m.subject, payload: m.data, reason },
  };
}

type RoomSubject = NonNullable<ReturnType<Naming['parseRoomSubject']>>;
/** Parsed subjects per naming: a stream has one subject per room, each parsed once (not per message). */
const subjectCache = new WeakMap<Naming, Map<string, RoomSubject | null>>();
/** Beyond this many rooms the cache starts over (bounded memory; a miss costs one parse). */
const SUBJECT_CACHE_MAX = 50_000;

function roomSubjectOf(naming: Naming, subject: string): RoomSubject | null {
  let cache = subjectCache.get(naming);
  if (!cache) subjectCache.set(naming, (cache = new Map()));
  let parsed = cache.get(subject);
  if (parsed === undefined) {
    parsed = naming.parseRoomSubject(subject);
    if (cache.size >= SUBJECT_CACHE_MAX) cache.clear();
    cache.set(subject, parsed);
  }
  return parsed;
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
