// A /sync room section's `summary` (client-server spec, "Room summary"): what a client needs
// to name and label a room it has not got every member of — the heroes (members to name the
// room after when it has no name or alias) and the joined and invited counts.
import type { StoredEvent } from './roomReader.ts';

export interface RoomSummary {
  'm.heroes': string[];
  'm.joined_member_count': number;
  'm.invited_member_count': number;
}

/** How many heroes the spec asks for. */
const HEROES = 5;

/**
 * The summary of a room whose state is `state` (ordered by position, as stateBefore returns
 * it), for `self` (null: a reader with no membership, such as a peeking device). Heroes are
 * the first five joined or invited members by the position of their membership, never
 * `self`; when there are none, the first five who left or were banned.
 */
export function roomSummary(state: readonly StoredEvent[], self: string | null): RoomSummary {
  const present: string[] = [];
  const gone: string[] = [];
  let joined = 0;
  let invited = 0;
  const members = state.filter((e) => e.pdu.type === 'm.room.member' && typeof e.pdu.state_key === 'string').sort((a, b) => a.seq - b.seq);
  for (const e of members) {
    const userId = e.pdu.state_key as string;
    const membership = (e.pdu.content as { membership?: unknown } | undefined)?.membership;
    if (membership === 'join') joined++;
    if (membership === 'invite') invited++;
    if (userId === self) continue;
    if (membership === 'join' || membership === 'invite') present.push(userId);
    else if (membership === 'leave' || membership === 'ban') gone.push(userId);
  }
  return { 'm.heroes': (present.length > 0 ? present : gone).slice(0, HEROES), 'm.joined_member_count': joined, 'm.invited_member_count': invited };
}
