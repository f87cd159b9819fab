// Auth chains: every event the `auth_events` of some events reach, transitively. The
// snapshot of an inbound peek, /state, /state_ids and /event_auth all answer with one.
import { inArray } from 'drizzle-orm';
import type { Pdu } from '../events/roomEvents.ts';
import type { Db } from '../store/db.ts';
import { syncapiRoomEvents } from '../store/schema.ts';

export interface ChainEvent {
  seq: number;
  eventId: string;
  pdu: Pdu;
}

/** The stored events with these IDs (those we hold), in no particular order. */
export async function eventsByIds(db: Db, ids: readonly string[]): Promise<ChainEvent[]> {
  if (ids.length === 0) return [];
  const rows = await db
    .select({ seq: syncapiRoomEvents.seq, eventId: syncapiRoomEvents.eventId, pdu: syncapiRoomEvents.pdu })
    .from(syncapiRoomEvents)
    .where(inArray(syncapiRoomEvents.eventId, [...ids]));
  return rows.map((r) => ({ seq: Number(r.seq), eventId: r.eventId, pdu: r.pdu as Pdu }));
}

/**
 * The auth chain of `from`: the events their `auth_events` reach, transitively, less
 * `exclude` (whose own auth events are still followed when they are among `from`), in
 * stream order. One query per level of the chain.
 */
export async function authChain(db: Db, from: readonly { pdu: Pdu }[], exclude: ReadonlySet<string> = new Set()): Promise<ChainEvent[]> {
  const chain = new Map<string, ChainEvent>();
  let frontier = [...new Set(from.flatMap((e) => e.pdu.auth_events))].filter((id) => !exclude.has(id));
  while (frontier.length > 0) {
    const rows = await eventsByIds(db, frontier);
    for (const r of rows) chain.set(r.eventId, r);
    frontier = [...new Set(rows.flatMap((r) => r.pdu.auth_events))].filter((id) => !exclude.has(id) && !chain.has(id));
  }
  return [...chain.values()].sort((a, b) => a.seq - b.seq);
}
