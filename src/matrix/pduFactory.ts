// Builds room version 10 PDUs for rooms hosted here: prev_events, auth_events and depth
// from the room's facts, content hash, ed25519 signature, reference-hash event ID.
import type { PduDraft } from '../actors/commands.ts';
import type { BuiltPdu, PduFactory } from '../actors/pduFactory.ts';
import { stateKey, type RoomFacts } from '../actors/state.ts';
import { TooLargeError } from '../actors/errors.ts';
import { canonicalJson, eventIdForPdu, hashAndSignPdu, type SigningKey } from '../crypto/index.ts';
import type { Pdu } from '../events/roomEvents.ts';

/** The auth events a draft cites (room version 10 "auth events selection"). */
export function selectAuthEvents(room: RoomFacts | null, draft: PduDraft): string[] {
  if (!room || draft.type === 'm.room.create') return [];
  const ids = new Set<string>();
  const add = (type: string, key = '') => {
    const e = room.state.get(stateKey(type, key));
    if (e) ids.add(e.eventId);
  };
  add('m.room.create');
  add('m.room.power_levels');
  add('m.room.member', draft.sender);
  if (draft.type === 'm.room.member' && typeof draft.state_key === 'string') {
    add('m.room.member', draft.state_key);
    const membership = draft.content.membership;
    if (membership === 'join' || membership === 'invite' || membership === 'knock') add('m.room.join_rules');
  }
  return [...ids];
}

/** The Matrix limit on a PDU: its canonical JSON, signatures and hashes included. */
export const MAX_PDU_BYTES = 65_536;

/** The size of a PDU as the limit counts it: the UTF-8 bytes of its canonical JSON. */
export function pduSize(pdu: object): number {
  return Buffer.byteLength(canonicalJson(pdu), 'utf8');
}

export class SigningPduFactory implements PduFactory {
  constructor(
    private readonly serverName: string,
    private readonly key: SigningKey,
  ) {}

  build(roomId: string, roomVersion: string, draft: PduDraft, room: RoomFacts | null, now: number): BuiltPdu {
    const unsigned: Omit<Pdu, 'hashes' | 'signatures'> = {
      type: draft.type,
      room_id: roomId,
      sender: draft.sender,
      content: draft.content,
      ...(typeof draft.state_key === 'string' ? { state_key: draft.state_key } : {}),
      ...(draft.redacts ? { redacts: draft.redacts } : {}),
      origin_server_ts: now,
      depth: room ? room.latest.depth + 1 : 1,
      prev_events: room ? [room.latest.eventId] : [],
      auth_events: selectAuthEvents(room, draft),
    };
    const pdu = hashAndSignPdu(unsigned, this.serverName, this.key, undefined, roomVersion) as unknown as Pdu;
    const size = pduSize(pdu);
    if (size > MAX_PDU_BYTES) throw new TooLargeError(`the event would be ${size} bytes; the limit is ${MAX_PDU_BYTES}`);
    return { pdu, eventId: eventIdForPdu(pdu, roomVersion) };
  }
}
