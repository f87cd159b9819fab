// evolve: fold one stored event into the room state. Pure; returns a new state and
// never mutates its input. Unknown events leave the state as it is, so old code can
// replay a newer log. `inPlace` is for a state the caller alone holds (an actor folding
// its history on activation): the same result without copying the maps per event, which
// would make folding a long history quadratic.
import { seqOfPosition } from '../events/envelope.ts';
import { peekKey, type StoredPeekEvent } from '../events/peekEvents.ts';
import type { Pdu, StoredRoomEvent } from '../events/roomEvents.ts';
import { stateKey, txnKey, type LivePeek, type RoomFacts, type RoomState } from './state.ts';

const RECENT_EVENT_IDS = 512;
const MAX_TXNS = 1000;

export type StoredEvent = ({ stream: 'peeks' } & StoredPeekEvent) | ({ stream: 'rooms' } & StoredRoomEvent);

export function evolve(state: RoomState, stored: StoredEvent, inPlace = false): RoomState {
  if (stored.stream === 'rooms') {
    const { event, seq } = stored;
    // History (backfill) is older than the room's state: it moves the position only.
    if (event.type !== 'RoomPdu' || event.origin === 'backfill') return { ...state, roomsSeq: seqOfPosition(seq) };
    const txn = event.txn ? txnKey(event.pdu.sender, event.txn.deviceId, event.txn.txnId) : undefined;
    return { ...state, roomsSeq: seqOfPosition(seq), room: foldPdu(state.room, event.pdu, event.eventId, seq, event.roomVersion, txn, inPlace) };
  }
  const { event, seq } = stored;
  const key = peekKey(event.peek);
  const peeks = inPlace ? (state.peeks as Map<string, LivePeek>) : new Map(state.peeks);
  switch (event.type) {
    case 'PeekStarted':
      peeks.set(key, {
        peek: event.peek,
        startedAt: event.at,
        renewedAt: event.at,
        expiresAt: event.expiresAt,
        renewalIntervalMs: event.renewalIntervalMs,
        startedSeq: seq,
      });
      break;
    case 'PeekRenewed': {
      const live = peeks.get(key);
      if (live) {
        peeks.set(key, {
          ...live,
          peek: event.peek,
          renewedAt: event.at,
          expiresAt: event.expiresAt,
          renewalIntervalMs: event.renewalIntervalMs ?? live.renewalIntervalMs,
        });
      }
      break;
    }
    case 'PeekExpired':
      peeks.delete(key);
      break;
    default:
      return { ...state, peeksSeq: seqOfPosition(seq) };
  }
  return { ...state, peeksSeq: seqOfPosition(seq), peeks };
}

/** Folds one accepted PDU into the room's facts (copy-on-write of the state map). */
export function foldPdu(room: RoomFacts | null, pdu: Pdu, eventId: string, seq: number, roomVersion: string, txnKey?: string, inPlace = false): RoomFacts | null {
  if (room === null) {
    if (pdu.type !== 'm.room.create' || pdu.state_key !== '') return null; // nothing before the create event counts
    return {
      roomVersion,
      createEventId: eventId,
      state: new Map([[stateKey(pdu.type, ''), { eventId, pdu, seq }]]),
      latest: { eventId, depth: pdu.depth, seq },
      txns: txnKey ? new Map([[txnKey, eventId]]) : new Map(),
      recentEventIds: [eventId],
      eventCount: 1,
    };
  }
  let state = room.state;
  if (typeof pdu.state_key === 'string') {
    const next = inPlace ? (state as Map<string, { eventId: string; pdu: Pdu; seq: number }>) : new Map(state);
    next.set(stateKey(pdu.type, pdu.state_key), { eventId, pdu, seq });
    state = next;
  }
  let txns = room.txns;
  if (txnKey) {
    const next = inPlace ? (txns as Map<string, string>) : new Map(txns);
    next.set(txnKey, eventId);
    // Idempotency covers the recent transactions; the oldest are forgotten first.
    if (next.size > MAX_TXNS) next.delete(next.keys().next().value!);
    txns = next;
  }
  return {
    ...room,
    state,
    txns,
    latest: { eventId, depth: Math.max(pdu.depth, room.latest.depth), seq },
    recentEventIds: inPlace ? pushBounded(room.recentEventIds as string[], eventId) : [...room.recentEventIds.slice(-(RECENT_EVENT_IDS - 1)), eventId],
    eventCount: room.eventCount + 1,
  };
}

function pushBounded(ids: string[], id: string): string[] {
  ids.push(id);
  if (ids.length > RECENT_EVENT_IDS) ids.splice(0, ids.length - RECENT_EVENT_IDS);
  return ids;
}
