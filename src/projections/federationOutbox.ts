// federationsender_outbox: peek endings a peer must hear of. Our expiry of a remote
// server's inbound peek becomes an `expired_peeks` entry for it; the end of our own
// outbound peek (no local device needs it any more) becomes a DELETE to the host.
import { decodePeekEvents, type PeekEvent } from '../events/peekEvents.ts';
import { federationsenderOutbox } from '../store/schema.ts';
import { chunks, pipelined } from '../store/sqlHelpers.ts';
import type { Tx } from '../store/db.ts';
import type { PeekProjection, Projected } from './projection.ts';

/** Outbound peek endings after which the host still holds our peek and must be told. */
const DELETE_REASONS = new Set(['unpeeked', 'no_active_peekers', 'visibility_changed', 'encrypted']);

export const federationOutboxProjection: PeekProjection = {
  name: 'federation_outbox',
  stream: 'peeks',
  tables: ['federationsender_outbox'],
  delivery: true,
  decode: decodePeekEvents,
  touches: (event: PeekEvent) => event.type === 'PeekExpired' && event.peek.kind !== 'device',
  async apply(tx: Tx, batch: Projected<PeekEvent>[]): Promise<void> {
    const rows: (typeof federationsenderOutbox.$inferInsert)[] = [];
    for (const { seq, event } of batch) {
      if (event.type !== 'PeekExpired') continue;
      const p = event.peek;
      if (p.kind === 'inbound' && event.reason !== 'remote_deleted') {
        rows.push({ seq, destination: p.server, kind: 'expired_peek', roomId: event.roomId, peekId: p.peekId });
      } else if (p.kind === 'outbound' && DELETE_REASONS.has(event.reason)) {
        rows.push({ seq, destination: p.server, kind: 'delete_peek', roomId: event.roomId, peekId: p.peekId });
      }
    }
    await pipelined(chunks(rows, 500).map((part) => tx.insert(federationsenderOutbox).values(part).onConflictDoNothing()));
  },
};
