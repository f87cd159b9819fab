// The seam between the room actor and Matrix event building: the actor decides *what*
// to write (drafts), the factory makes a complete, hashed and signed PDU of each.
import type { Pdu } from '../events/roomEvents.ts';
import type { PduDraft } from './commands.ts';
import type { RoomFacts } from './state.ts';

export interface BuiltPdu {
  pdu: Pdu;
  eventId: string;
}

export interface PduFactory {
  /** Builds the next event of `room` (null: the draft is the create event). */
  build(roomId: string, roomVersion: string, draft: PduDraft, room: RoomFacts | null, now: number): BuiltPdu;
}
