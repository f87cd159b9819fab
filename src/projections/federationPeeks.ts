// federationsender_inbound_peeks and federationsender_outbound_peeks: the live MSC2444
// peeks, in both directions. Ended peeks are deleted; their history is in peek_audit.
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import { decodePeekEvents, type PeekEvent, type PeekStarted } from '../events/peekEvents';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks } from '../store/schema';
import { chunks, insertRows, tupleIn } from '../store/sqlHelpers';
import type { Tx } from '../store/db';
import type { PeekProjection, Projected } from './projection';

type InboundRow = typeof federationsenderInboundPeeks.$inferSelect;
type OutboundRow = typeof federationsenderOutboundPeeks.$inferSelect;
type ServerPeek = { kind: 'inbound' | 'outbound'; server: string; peekId: string };

/** One live-peek table: which peeks it holds, its key, and the row a start makes. */
interface PeekTable<R extends { renewedAt: number; renewalIntervalMs: number; expiresAt: number }> {
  kind: 'inbound' | 'outbound';
  table: PgTable;
  keyColumns: PgColumn[];
  /** Key fields of a peek event / of a row, in keyColumns order. */
  eventKey(roomId: string, peek: ServerPeek): string[];
  rowKey(row: R): string[];
  started(e: PeekStarted & { peek: ServerPeek }, seq: number, shard: number): R;
}

const inbound: PeekTable<InboundRow> = {
  kind: 'inbound',
  table: federationsenderInboundPeeks,
  keyColumns: [federationsenderInboundPeeks.roomId, federationsenderInboundPeeks.serverName, federationsenderInboundPeeks.peekId],
  eventKey: (roomId, p) => [roomId, p.server, p.peekId],
  rowKey: (r) => [r.roomId, r.serverName, r.peekId],
  started: (e, seq, shard) => ({ ...common(e, seq, shard), roomSeq: e.roomSeq ?? 0 }),
};

// One outbound peek per (room, target server), whatever its peek ID.
const outbound: PeekTable<OutboundRow> = {
  kind: 'outbound',
  table: federationsenderOutboundPeeks,
  keyColumns: [federationsenderOutboundPeeks.roomId, federationsenderOutboundPeeks.serverName],
  eventKey: (roomId, p) => [roomId, p.server],
  rowKey: (r) => [r.roomId, r.serverName],
  started: (e, seq, shard) => common(e, seq, shard),
};

function common(e: PeekStarted & { peek: ServerPeek }, seq: number, shard: number) {
  const interval = e.renewalIntervalMs ?? 0;
  return {
    roomId: e.roomId,
    serverName: e.peek.server,
    peekId: e.peek.peekId,
    shard,
    createdAt: e.at,
    renewedAt: e.at,
    renewalIntervalMs: interval,
    expiresAt: e.expiresAt ?? e.at + interval,
    startedSeq: seq,
  };
}

export const federationPeeksProjection: PeekProjection = {
  name: 'federation_peeks',
  stream: 'peeks',
  tables: ['federationsender_inbound_peeks', 'federationsender_outbound_peeks'],
  decode: decodePeekEvents,
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    await applyTo(tx, inbound, batch);
    await applyTo(tx, outbound, batch);
  },
};

/** Folds the batch's peeks of `spec.kind` into the live rows: upsert what lives, delete what ended. */
async function applyTo<R extends { renewedAt: number; renewalIntervalMs: number; expiresAt: number }>(
  tx: Tx,
  spec: PeekTable<R>,
  all: Projected<PeekEvent>[],
): Promise<void> {
  const batch = all.filter((b) => b.event.peek.kind === spec.kind);
  if (batch.length === 0) return;
  const keyOf = (e: PeekEvent) => spec.eventKey(e.roomId, e.peek as ServerPeek);
  const joined = (k: string[]) => k.join('\u0000');

  // The current rows of peeks this batch renews or ends without starting them.
  const startedHere = new Set<string>();
  const needed = new Map<string, string[]>();
  for (const { event } of batch) {
    const k = keyOf(event);
    if (event.type === 'PeekStarted') startedHere.add(joined(k));
    else if (!startedHere.has(joined(k))) needed.set(joined(k), k);
  }
  const rows = new Map<string, R | null>();
  for (const part of chunks([...needed.values()], 1000)) {
    const found = (await tx.select().from(spec.table).where(tupleIn(spec.keyColumns, part))) as R[];
    for (const r of found) rows.set(joined(spec.rowKey(r)), r);
  }

  for (const { seq, shard, event } of batch) {
    const key = joined(keyOf(event));
    const row = rows.get(key);
    if (event.type === 'PeekStarted') {
      rows.set(key, spec.started(event as PeekStarted & { peek: ServerPeek }, seq, shard));
    } else if (event.type === 'PeekRenewed' && row) {
      const interval = event.renewalIntervalMs ?? row.renewalIntervalMs;
      rows.set(key, { ...row, renewedAt: event.at, renewalIntervalMs: interval, expiresAt: event.expiresAt ?? event.at + interval });
    } else if (event.type === 'PeekExpired') {
      rows.set(key, null);
    }
  }

  const live = [...rows.values()].filter((r): r is R => r !== null);
  const gone = [...rows.entries()].filter(([, r]) => r === null).map(([k]) => k.split('\u0000'));
  await insertRows(tx, spec.table, live as Record<string, unknown>[], { target: spec.keyColumns.map((c) => c.name) });
  for (const part of chunks(gone, 500)) await tx.delete(spec.table).where(tupleIn(spec.keyColumns, part));
}
