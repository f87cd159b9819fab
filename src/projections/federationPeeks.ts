// federationsender_inbound_peeks and federationsender_outbound_peeks: the live MSC2444
// peeks, in both directions. Ended peeks are deleted; their history is in peek_audit.
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import { toBuffer } from '../crypto/base64.ts';
import { decodePeekEvents, type PeekEvent, type PeekStarted } from '../events/peekEvents.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks } from '../store/schema.ts';
import { chunks, insertRows, pipelined, selectByKeys, tupleIn } from '../store/sqlHelpers.ts';
import type { Tx } from '../store/db.ts';
import type { PeekProjection, Projected } from './projection.ts';

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

/**
 * The bytes every server peek's JSON holds (`"kind":"inbound"` or `"kind":"outbound"`: the
 * log's JSON escapes no letters). A message without them holds only device peeks, which
 * these tables never take: a rebuild from a log of millions of device peeks decodes only
 * the few messages that may be server peeks.
 */
const SERVER_PEEK_MARK = Buffer.from('bound"', 'latin1');

export const federationPeeksProjection: PeekProjection = {
  name: 'federation_peeks',
  stream: 'peeks',
  tables: ['federationsender_inbound_peeks', 'federationsender_outbound_peeks'],
  decode: decodePeekEvents,
  touches: (event: PeekEvent) => event.peek.kind !== 'device',
  mayTouch: (data: Uint8Array) => toBuffer(data).includes(SERVER_PEEK_MARK),
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    const byKind: Record<ServerPeek['kind'], Projected<PeekEvent>[]> = { inbound: [], outbound: [] };
    for (const b of batch) if (b.event.peek.kind !== 'device') byKind[b.event.peek.kind].push(b);
    // Two tables, no row in common: their statements go out together.
    await pipelined([applyTo(tx, inbound, byKind.inbound), applyTo(tx, outbound, byKind.outbound)]);
  },
};

/** Folds the batch's peeks of `spec.kind` into the live rows: upsert what lives, delete what ended. */
async function applyTo<R extends { renewedAt: number; renewalIntervalMs: number; expiresAt: number }>(tx: Tx, spec: PeekTable<R>, batch: Projected<PeekEvent>[]): Promise<void> {
  if (batch.length === 0) return;
  // Each event's key, once: its fields (for SQL) and joined (for maps).
  const fields = batch.map(({ event }) => spec.eventKey(event.roomId, event.peek as ServerPeek));
  const keys = fields.map((k) => k.join('\u0000'));

  // The current rows of peeks this batch renews or ends without starting them.
  const startedHere = new Set<string>();
  const needed = new Map<string, string[]>();
  batch.forEach(({ event }, i) => {
    if (event.type === 'PeekStarted') startedHere.add(keys[i]!);
    else if (!startedHere.has(keys[i]!)) needed.set(keys[i]!, fields[i]!);
  });
  const rows = new Map<string, R | null>();
  const found = await pipelined(chunks([...needed.values()], 1000).map((part) => selectByKeys(tx, spec.table, spec.keyColumns, part)));
  for (const r of found.flat() as R[]) rows.set(spec.rowKey(r).join('\u0000'), r);

  const gone = new Map<string, string[]>();
  batch.forEach(({ seq, shard, event }, i) => {
    const key = keys[i]!;
    const row = rows.get(key);
    if (event.type === 'PeekStarted') {
      rows.set(key, spec.started(event as PeekStarted & { peek: ServerPeek }, seq, shard));
      gone.delete(key);
    } else if (event.type === 'PeekRenewed' && row) {
      const interval = event.renewalIntervalMs ?? row.renewalIntervalMs;
      rows.set(key, { ...row, renewedAt: event.at, renewalIntervalMs: interval, expiresAt: event.expiresAt ?? event.at + interval });
    } else if (event.type === 'PeekExpired') {
      rows.set(key, null);
      gone.set(key, fields[i]!);
    }
  });

  const live: R[] = [];
  for (const r of rows.values()) if (r !== null) live.push(r);
  // Different keys: the upserts and the deletes go out together.
  await pipelined([
    insertRows(tx, spec.table, live as Record<string, unknown>[], { target: spec.keyColumns.map((c) => c.name) }),
    ...chunks([...gone.values()], 500).map((part) => tx.delete(spec.table).where(tupleIn(spec.keyColumns, part))),
  ]);
}
