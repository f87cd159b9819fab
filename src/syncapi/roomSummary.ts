// A /sync room section's `summary` (client-server spec, "Room summary"): what a client needs
// to name and label a room it has not got every member of — the heroes (members to name the
// room after when it has no name or alias) and the joined and invited counts.
import type { StoredEvent } from './roomReader.ts';

export interface RoomSummary {
  /** Only for a room with neither a name nor a canonical alias (what a client names it by otherwise). */
  'm.heroes'?: string[];
  'm.joined_member_count': number;
  'm.invited_member_count': number;
}

/** How many heroes the spec asks for. */
const HEROES = 5;

/**
 * The summary of a room whose state is `state` (ordered by position, as stateBefore returns
 * it), for `self` (null: a reader with no membership, such as a peeking device). Heroes are
 * the first five joined or invited members by the position of their membership, never
 * `self`; when there are none, the first five who left or were banned. A room with a name or
 * a canonical alias has no heroes: the client names it by those (and, lazy-loading members,
 * is not sent the heroes' member events it would not use).
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
  const counts = { 'm.joined_member_count': joined, 'm.invited_member_count': invited };
  if (hasText(state, 'm.room.name', 'name') || hasText(state, 'm.room.canonical_alias', 'alias')) return counts;
  return { 'm.heroes': (present.length > 0 ? present : gone).slice(0, HEROES), ...counts };
}

/** Whether the room's state event of `type` (state key "") has a non-empty string `field`. */
function hasText(state: readonly StoredEvent[], type: string, field: string): boolean {
  const e = state.find((x) => x.pdu.type === type && x.pdu.state_key === '');
  const value = (e?.pdu.content as Record<string, unknown> | undefined)?.[field];
  return typeof value === 'string' && value !== '';
}
