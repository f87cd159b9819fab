// Sync tokens: opaque to clients, two stream positions to us (ROOMS and PEEKS sequences),
// so they stay valid across restarts and rebuilds.
export interface SyncPosition {
  rooms: number;
  peeks: number;
}

export function formatSyncToken(p: SyncPosition): string {
  return `s${p.rooms}_${p.peeks}`;
}

export function parseSyncToken(token: string): SyncPosition | null {
  const m = /^s(\d{1,15})_(\d{1,15})$/.exec(token);
  return m ? { rooms: Number(m[1]), peeks: Number(m[2]) } : null;
}

/** Pagination tokens for /messages: `t<seq>` is the position just before event seq. */
export function formatTopologicalToken(seq: number): string {
  return `t${seq}`;
}

/** A pagination token: a `t<seq>` or a sync token (its ROOMS position + 1). */
export function parsePaginationToken(token: string): number | null {
  const t = /^t(\d{1,15})$/.exec(token);
  if (t) return Number(t[1]);
  const s = parseSyncToken(token);
  return s ? s.rooms + 1 : null;
}
