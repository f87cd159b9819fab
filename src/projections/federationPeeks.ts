// federationsender_inbound_peeks and federationsender_outbound_peeks: the live MSC2444
// peeks, in both directions. Ended peeks are deleted; their history is in peek_audit.
import { decodePeekEvent, type PeekEvent } from '../events/peekEvents';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks } from '../store/schema';
import { chunks, excludedAll, tupleIn } from '../store/sqlHelpers';
import type { Tx } from '../store/db';
import type { PeekProjection, Projected } from './projection';

type InboundRow = typeof federationsenderInboundPeeks.$inferSelect;
type OutboundRow = typeof federationsenderOutboundPeeks.$inferSelect;

export const federationPeeksProjection: PeekProjection = {
  name: 'federation_peeks',
  stream: 'peeks',
  tables: ['federationsender_inbound_peeks', 'federationsender_outbound_peeks'],
  decode: decodePeekEvent,
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    await applyInbound(tx, batch.filter((b) => b.event.peek.kind === 'inbound'));
    await applyOutbound(tx, batch.filter((b) => b.event.peek.kind === 'outbound'));
  },
};

async function applyInbound(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
  if (batch.length === 0) return;
  const t = federationsenderInboundPeeks;
  const k = (e: PeekEvent) => (e.peek.kind === 'inbound' ? `${e.roomId}\u0000${e.peek.server}\u0000${e.peek.peekId}` : '');
  const tuple = (e: PeekEvent): [string, string, string] =>
    e.peek.kind === 'inbound' ? [e.roomId, e.peek.server, e.peek.peekId] : ['', '', ''];
  const rows = await loadPrior(tx, batch, k, async (part) => {
    const found = await tx.select().from(t).where(tupleIn([t.roomId, t.serverName, t.peekId], part.map(tuple)));
    return found.map((r) => [`${r.roomId}\u0000${r.serverName}\u0000${r.peekId}`, r] as const);
  });
  for (const { seq, shard, event } of batch) {
    if (event.peek.kind !== 'inbound') continue;
    const key = k(event);
    const row = rows.get(key);
    if (event.type === 'PeekStarted') {
      const interval = event.renewalIntervalMs ?? 0;
      rows.set(key, {
        roomId: event.roomId,
        serverName: event.peek.server,
        peekId: event.peek.peekId,
        shard,
        createdAt: event.at,
        renewedAt: event.at,
        renewalIntervalMs: interval,
        expiresAt: event.expiresAt ?? event.at + interval,
        roomSeq: event.roomSeq ?? 0,
        startedSeq: seq,
      });
    } else if (event.type === 'PeekRenewed' && row) {
      rows.set(key, {
        ...row,
        renewedAt: event.at,
        renewalIntervalMs: event.renewalIntervalMs ?? row.renewalIntervalMs,
        expiresAt: event.expiresAt ?? event.at + (event.renewalIntervalMs ?? row.renewalIntervalMs),
      });
    } else if (event.type === 'PeekExpired') {
      rows.set(key, null);
    }
  }
  await write(rows, async (live) => {
    await tx.insert(t).values(live).onConflictDoUpdate({ target: [t.roomId, t.serverName, t.peekId], set: excludedAll(t, ['roomId', 'serverName', 'peekId']) });
  }, async (gone) => {
    await tx.delete(t).where(tupleIn([t.roomId, t.serverName, t.peekId], gone.map((g) => g.split('\u0000'))));
  });
}

async function applyOutbound(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
  if (batch.length === 0) return;
  const t = federationsenderOutboundPeeks;
  const k = (e: PeekEvent) => (e.peek.kind === 'outbound' ? `${e.roomId}\u0000${e.peek.server}` : '');
  const rows = await loadPrior(tx, batch, k, async (part) => {
    const found = await tx
      .select()
      .from(t)
      .where(tupleIn([t.roomId, t.serverName], part.map((e) => [e.roomId, e.peek.kind === 'outbound' ? e.peek.server : ''])));
    return found.map((r) => [`${r.roomId}\u0000${r.serverName}`, r] as const);
  });
  for (const { seq, shard, event } of batch) {
    if (event.peek.kind !== 'outbound') continue;
    const key = k(event);
    const row = rows.get(key);
    if (event.type === 'PeekStarted') {
      const interval = event.renewalIntervalMs ?? 0;
      rows.set(key, {
        roomId: event.roomId,
        serverName: event.peek.server,
        peekId: event.peek.peekId,
        shard,
        createdAt: event.at,
        renewedAt: event.at,
        renewalIntervalMs: interval,
        expiresAt: event.expiresAt ?? event.at + interval,
        startedSeq: seq,
      });
    } else if (event.type === 'PeekRenewed' && row) {
      rows.set(key, {
        ...row,
        renewedAt: event.at,
        renewalIntervalMs: event.renewalIntervalMs ?? row.renewalIntervalMs,
        expiresAt: event.expiresAt ?? event.at + (event.renewalIntervalMs ?? row.renewalIntervalMs),
      });
    } else if (event.type === 'PeekExpired') {
      rows.set(key, null);
    }
  }
  await write(rows, async (live) => {
    await tx.insert(t).values(live).onConflictDoUpdate({ target: [t.roomId, t.serverName], set: excludedAll(t, ['roomId', 'serverName']) });
  }, async (gone) => {
    await tx.delete(t).where(tupleIn([t.roomId, t.serverName], gone.map((g) => g.split('\u0000'))));
  });
}

/** Loads the current rows of peeks this batch renews or ends without starting them. */
async function loadPrior<R>(
  tx: Tx,
  batch: Projected<PeekEvent>[],
  keyOf: (e: PeekEvent) => string,
  load: (events: PeekEvent[]) => Promise<(readonly [string, R])[]>,
): Promise<Map<string, R | null>> {
  void tx;
  const startedHere = new Set<string>();
  const needed = new Map<string, PeekEvent>();
  for (const { event } of batch) {
    const key = keyOf(event);
    if (event.type === 'PeekStarted') startedHere.add(key);
    else if (!startedHere.has(key)) needed.set(key, event);
  }
  const rows = new Map<string, R | null>();
  for (const part of chunks([...needed.values()], 500)) for (const [key, row] of await load(part)) rows.set(key, row);
  return rows;
}

async function write<R>(rows: Map<string, R | null>, upsert: (live: R[]) => Promise<void>, remove: (keys: string[]) => Promise<void>) {
  const live = [...rows.values()].filter((r): r is R => r !== null);
  const gone = [...rows.entries()].filter(([, r]) => r === null).map(([key]) => key);
  for (const part of chunks(live, 400)) await upsert(part);
  for (const part of chunks(gone, 500)) await remove(part);
}
