// History visibility, judged at each event, as the Matrix specification defines it
// (client-server API, "History visibility"). Pure: the caller reads the facts (the room's
// m.room.history_visibility changes and the viewer's membership changes, in stream order)
// and asks, event by event, whether the viewer may see it.
//
// For an event E, with the history visibility and the viewer's membership as they were
// just before E:
//   1. world_readable: visible to anyone;
//   2. the viewer's membership was join: visible;
//   3. shared: visible if the viewer joined the room at any point at or after E;
//   4. invited: visible if the viewer's membership was invite;
//   5. otherwise hidden.
// An m.room.history_visibility event is visible if the rule allows it under the setting
// before it or the one it sets; the viewer's own membership event, under the membership
// before it or the one it sets. A viewer that is not a user of the room (a peeking device
// before it joins, a peeking server) has no membership: only world_readable events.

export type HistoryVisibility = 'world_readable' | 'shared' | 'invited' | 'joined';

const KNOWN: ReadonlySet<string> = new Set(['world_readable', 'shared', 'invited', 'joined']);

/** The setting an m.room.history_visibility content names; anything unknown counts as `shared`, as absent does. */
export function visibilityOf(content: unknown): HistoryVisibility {
  const v = (content as { history_visibility?: unknown } | null | undefined)?.history_visibility;
  return typeof v === 'string' && KNOWN.has(v) ? (v as HistoryVisibility) : 'shared';
}

/**
 * Where an event is in the room's order: depth, then stream sequence (topological order,
 * so that history fetched later still sits where it belongs). Without a depth, the
 * sequence alone orders.
 */
export interface Place {
  seq: number;
  depth?: number;
}

export interface VisibilityFacts {
  /** The room's history visibility changes, in room order. */
  visibility: readonly (Place & { value: HistoryVisibility })[];
  /** The viewer's own membership changes, in room order (empty for a non-member). */
  membership: readonly (Place & { membership: string })[];
  /** The viewer (a user ID), or null for a reader with no membership (a peeking server). */
  viewer: string | null;
}

/** What the rule needs of an event. */
export interface EventRef {
  seq: number;
  pdu: { type: string; state_key?: string; content?: Record<string, unknown>; depth?: number };
}

/** Compares two places in room order. */
function compare(a: Place, b: Place): number {
  return (a.depth ?? 0) - (b.depth ?? 0) || a.seq - b.seq;
}

/** The last entry strictly before `at`, by binary search over a list in room order. */
function before<T extends Place>(list: readonly T[], at: Place): T | undefined {
  let lo = 0;
  let hi = list.length; // first index at or after `at`
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(list[mid]!, at) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 ? list[lo - 1] : undefined;
}

function allows(vis: HistoryVisibility, membership: string | undefined, joinedAtOrAfter: boolean): boolean {
  if (vis === 'world_readable') return true;
  if (membership === 'join') return true;
  if (vis === 'shared' && joinedAtOrAfter) return true;
  if (vis === 'invited' && membership === 'invite') return true;
  return false;
}

/** A judge for one viewer over one room's facts: call `visible(event)` per event. */
export function visibilityJudge(facts: VisibilityFacts): (event: EventRef) => boolean {
  // The viewer's last join: "joined at any point at or after E" is lastJoin >= E.
  let lastJoin: Place | undefined;
  for (const m of facts.membership) if (m.membership === 'join') lastJoin = m;
  return (event) => {
    const at: Place = { seq: event.seq, depth: event.pdu.depth };
    const visBefore = before(facts.visibility, at)?.value ?? 'shared';
    const memBefore = before(facts.membership, at)?.membership;
    const joinedLater = lastJoin !== undefined && compare(lastJoin, at) >= 0;
    const { type, state_key: stateKey, content } = event.pdu;
    const visCandidates: HistoryVisibility[] = [visBefore];
    if (type === 'm.room.history_visibility' && stateKey === '') visCandidates.push(visibilityOf(content));
    const memCandidates: (string | undefined)[] = [memBefore];
    if (type === 'm.room.member' && facts.viewer !== null && stateKey === facts.viewer) {
      const after = (content as { membership?: unknown } | undefined)?.membership;
      if (typeof after === 'string') memCandidates.push(after);
    }
    return visCandidates.some((vis) => memCandidates.some((mem) => allows(vis, mem, joinedLater)));
  };
}

/** The events of `events` the viewer may see, in their order. */
export function visibleEvents<E extends EventRef>(facts: VisibilityFacts, events: readonly E[]): E[] {
  const judge = visibilityJudge(facts);
  return events.filter(judge);
}

/**
 * Whether a viewer may ever read anything of the room: it is a member (or was one, or is
 * invited), or the room is world_readable now. Finer checks are per event.
 */
export function mayOpenRoom(facts: VisibilityFacts, currentVisibility: HistoryVisibility): boolean {
  return currentVisibility === 'world_readable' || facts.membership.length > 0;
}
