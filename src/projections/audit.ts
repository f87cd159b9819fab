// peek_audit: one row per peek event, keyed by its PEEKS stream sequence.
import { decodePeekEvents, type PeekEvent } from '../events/peekEvents.ts';
import { peekAudit } from '../store/schema.ts';
import { insertRows } from '../store/sqlHelpers.ts';
import type { Tx } from '../store/db.ts';
import type { PeekProjection, Projected } from './projection.ts';

export function auditRow({ seq, shard, event }: Projected<PeekEvent>): typeof peekAudit.$inferInsert {
  const p = event.peek;
  return {
    seq,
    roomId: event.roomId,
    shard,
    eventType: event.type,
    kind: p.kind,
    userId: p.kind === 'device' ? p.userId : null,
    deviceId: p.kind === 'device' ? p.deviceId : null,
    serverName: p.kind === 'device' ? null : p.server,
    peekId: p.kind === 'device' ? null : p.peekId,
    at: event.at,
    expiresAt: event.type === 'PeekExpired' ? null : (event.expiresAt ?? null),
    renewalIntervalMs: event.type === 'PeekExpired' ? null : (event.renewalIntervalMs ?? null),
    reason: event.type === 'PeekExpired' ? event.reason : null,
  };
}

export const auditProjection: PeekProjection = {
  name: 'audit',
  stream: 'peeks',
  tables: ['peek_audit'],
  decode: decodePeekEvents,
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    await insertRows(tx, peekAudit, batch.map(auditRow), { target: ['seq'], doNothing: true });
  },
};
