// Sync tokens: opaque to clients, stream positions to us — ROOMS and PEEKS sequences, and
// the client_data_stream value (presence, account data) — so they stay valid across
// restarts and rebuilds.
export interface SyncPosition {
  rooms: number;
  peeks: number;
}

/** A /sync token: the stream positions, and the last client_data_stream value the client saw. */
export interface SyncTokenPosition extends SyncPosition {
  clientData: number;
  /**
   * The sync sequence a lazy-loading member's tokens belong to (sentMembers.ts): set by the
   * answer that started it, carried on by every answer after. Absent in other tokens.
   */
  lazySeq?: string;
}

/** What a lazy sequence ID may be: lower-case letters and digits. */
const LAZY_SEQ = /^[0-9a-z]{1,16}$/;

/**
 * `s<rooms>_<peeks>_<clientData>`, and `_<lazySeq>` when there is one; without a client-data
 * part, the older `s<rooms>_<peeks>` (pagination tokens).
 */
export function formatSyncToken(p: SyncPosition & { clientData?: number; lazySeq?: string }): string {
  if (p.clientData === undefined) return `s${p.rooms}_${p.peeks}`;
  if (p.lazySeq !== undefined && LAZY_SEQ.test(p.lazySeq)) return `s${p.rooms}_${p.peeks}_${p.clientData}_${p.lazySeq}`;
  return `s${p.rooms}_${p.peeks}_${p.clientData}`;
}

/**
 * A sync token. Tokens made before client data had a part of their own (`s<rooms>_<peeks>`)
 * still work, read as client-data position 0: the next answer carries the client data as an
 * initial sync would (all account data, the presence of everyone sharing a room). Reading
 * them as "everything seen" would lose whatever changed between the upgrade and the
 * client's next sync; re-sending state the client may already have is harmless, since
 * presence and account data events replace what the client holds.
 */
export function parseSyncToken(token: string): SyncTokenPosition | null {
  const m = /^s(\d{1,15})_(\d{1,15})(?:_(\d{1,15})(?:_([0-9a-z]{1,16}))?)?$/.exec(token);
  if (!m) return null;
  const p: SyncTokenPosition = { rooms: Number(m[1]), peeks: Number(m[2]), clientData: m[3] === undefined ? 0 : Number(m[3]) };
  if (m[4] !== undefined) p.lazySeq = m[4];
  return p;
}

/**
 * A place in a room's history. /messages walks a room in topological order — depth, then
 * ROOMS sequence — so that history fetched later from another server (backfill, with
 * older depths but newer sequences) still reads in order. A position is "just before
 * the event (depth, seq)".
 */
export interface TopoPosition {
  depth: number;
  seq: number;
}

/** Where an event is: going backwards from here starts with the event before it. */
export function positionOf(e: { seq: number; pdu: { depth: number } }): TopoPosition {
  return { depth: e.pdu.depth, seq: e.seq };
}

/** Just after an event: going backwards from here starts with the event itself. */
export function positionAfter(e: { seq: number; pdu: { depth: number } }): TopoPosition {
  return { depth: e.pdu.depth, seq: e.seq + 1 };
}

/** Pagination tokens for /messages: `t<depth>_<seq>`. */
export function formatTopologicalToken(p: TopoPosition): string {
  return `t${p.depth}_${p.seq}`;
}

/**
 * A pagination token: a topological position, or a stream position (from a sync token:
 * everything up to its ROOMS sequence is before it) that the reader turns into one.
 */
export type PaginationToken = { topo: TopoPosition } | { stream: number };

export function parsePaginationToken(token: string): PaginationToken | null {
  const t = /^t(\d{1,15})_(\d{1,15})$/.exec(token);
  if (t) return { topo: { depth: Number(t[1]), seq: Number(t[2]) } };
  // The older `t<seq>` tokens (before topological order) still work: a stream position.
  const legacy = /^t(\d{1,15})$/.exec(token);
  if (legacy) return { stream: Number(legacy[1]) };
  const s = parseSyncToken(token);
  return s ? { stream: s.rooms + 1 } : null;
}
