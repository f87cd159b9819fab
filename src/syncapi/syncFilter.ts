// What /sync honours of a sync filter (client-server API, "Filtering"), read once per
// request from a filter whose shape filterShape.ts has checked: per section, the event
// types and senders to keep (`*` matches any run of characters) and a limit.

export const DEFAULT_TIMELINE_LIMIT = 20;
export const MAX_TIMELINE_LIMIT = 1000;

/** One section's event filter. Absent lists keep everything; an empty `types` or `senders` keeps nothing. */
export interface EventFilter {
  types?: string[];
  notTypes?: string[];
  senders?: string[];
  notSenders?: string[];
  limit?: number;
  rooms?: string[];
  notRooms?: string[];
  /** `contains_url`: true keeps only events whose content has a `url` key, false only those without. */
  containsUrl?: boolean;
  /** `lazy_load_members` (honoured in `room.state`): member events only of those the client needs. */
  lazyLoadMembers?: true;
  /** `include_redundant_members` (with lazy_load_members): the senders' member events even when the device has them. */
  includeRedundantMembers?: true;
}

export interface SyncFilter {
  /** `room.rooms` and `room.not_rooms`: which rooms the response holds at all; `room.include_leave`: rooms left, in an initial sync too. */
  room: { rooms?: string[]; notRooms?: string[]; includeLeave?: true };
  timeline: EventFilter & { limit: number };
  state: EventFilter;
  ephemeral: EventFilter;
  presence: EventFilter;
  accountData: EventFilter;
  roomAccountData: EventFilter;
  /** Everything above as one string: equal keys, equal filters (shared answers, section caches). */
  key: string;
}

/** Most presence or account data events of one section a filter's limit may ask for. */
const MAX_SECTION_LIMIT = 10_000;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const strings = (v: unknown): string[] | undefined => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : undefined);

function eventFilterOf(raw: unknown, maxLimit: number): EventFilter {
  if (!isObject(raw)) return {};
  const f: EventFilter = {};
  const lists = [
    ['types', 'types'],
    ['not_types', 'notTypes'],
    ['senders', 'senders'],
    ['not_senders', 'notSenders'],
    ['rooms', 'rooms'],
    ['not_rooms', 'notRooms'],
  ] as const;
  for (const [from, to] of lists) {
    const list = strings(raw[from]);
    if (list) f[to] = list;
  }
  if (typeof raw.limit === 'number' && Number.isSafeInteger(raw.limit) && raw.limit >= 0) f.limit = Math.min(raw.limit, maxLimit);
  if (typeof raw.contains_url === 'boolean') f.containsUrl = raw.contains_url;
  if (raw.lazy_load_members === true) f.lazyLoadMembers = true;
  if (raw.include_redundant_members === true) f.includeRedundantMembers = true;
  return f;
}

/** A room event filter (/messages' and /context's `filter`) whose shape was checked. */
export function roomEventFilterOf(raw: unknown): EventFilter {
  return eventFilterOf(raw, Number.MAX_SAFE_INTEGER);
}

/** The filter /sync applies (null: no filter — everything, with the default timeline limit). */
export function syncFilterOf(raw: unknown): SyncFilter {
  const top = isObject(raw) ? raw : {};
  const room = isObject(top.room) ? top.room : {};
  const timeline = eventFilterOf(room.timeline, MAX_TIMELINE_LIMIT);
  const roomLists: SyncFilter['room'] = {};
  const rooms = strings(room.rooms);
  const notRooms = strings(room.not_rooms);
  if (rooms) roomLists.rooms = rooms;
  if (notRooms) roomLists.notRooms = notRooms;
  if (room.include_leave === true) roomLists.includeLeave = true;
  const parts = {
    room: roomLists,
    timeline: { ...timeline, limit: timeline.limit ?? DEFAULT_TIMELINE_LIMIT },
    state: eventFilterOf(room.state, Number.MAX_SAFE_INTEGER),
    ephemeral: eventFilterOf(room.ephemeral, MAX_SECTION_LIMIT),
    presence: eventFilterOf(top.presence, MAX_SECTION_LIMIT),
    accountData: eventFilterOf(top.account_data, MAX_SECTION_LIMIT),
    roomAccountData: eventFilterOf(room.account_data, MAX_SECTION_LIMIT),
  };
  return { ...parts, key: JSON.stringify(parts) };
}

/** Whether a filter keeps events by type, sender or content (not only by count). */
export function selects(f: EventFilter): boolean {
  return f.types !== undefined || f.notTypes !== undefined || f.senders !== undefined || f.notSenders !== undefined || f.containsUrl !== undefined;
}

/**
 * Whether `value` matches a filter pattern: `*` stands for any run of characters, everything
 * else for itself. Matched without a regular expression (a pattern of many `*` would make a
 * backtracking one take polynomial time of high degree): the classic two-pointer wildcard
 * match, which backs up only to the last `*`, so O(|pattern| × |value|) at worst.
 */
export function matchesPattern(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  let p = 0;
  let v = 0;
  let star = -1;
  let resume = 0;
  while (v < value.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      resume = v;
    } else if (p < pattern.length && pattern[p] === value[v]) {
      p++;
      v++;
    } else if (star >= 0) {
      p = star + 1;
      v = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

const anyMatches = (list: string[], value: string) => list.some((p) => matchesPattern(p, value));

/**
 * Whether an event of `type` from `sender` passes the filter's type and sender lists — and,
 * given the event's `content`, its `contains_url`.
 */
export function keeps(f: EventFilter, type: string, sender?: string, content?: unknown): boolean {
  if (f.containsUrl !== undefined && content !== undefined && hasUrl(content) !== f.containsUrl) return false;
  if (f.notTypes && anyMatches(f.notTypes, type)) return false;
  if (f.types && !anyMatches(f.types, type)) return false;
  if (sender !== undefined) {
    if (f.notSenders && f.notSenders.includes(sender)) return false;
    if (f.senders && !f.senders.includes(sender)) return false;
  }
  return true;
}

/** Whether an event's content has a `url` key (what `contains_url` asks about). */
export function hasUrl(content: unknown): boolean {
  return content !== null && typeof content === 'object' && Object.prototype.hasOwnProperty.call(content, 'url');
}

/** Whether a room passes a filter's room lists (`not_rooms` first, then `rooms`). */
export function keepsRoom(f: Pick<EventFilter, 'rooms' | 'notRooms'>, roomId: string): boolean {
  if (f.notRooms && f.notRooms.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}

/** Events that pass the filter, at most its limit. */
export function applyFilter<E>(f: EventFilter, events: E[], typeOf: (e: E) => string, senderOf?: (e: E) => string, contentOf?: (e: E) => unknown): E[] {
  const kept = events.filter((e) => keeps(f, typeOf(e), senderOf?.(e), contentOf?.(e)));
  return f.limit !== undefined && kept.length > f.limit ? kept.slice(0, f.limit) : kept;
}

/**
 * A filter's type patterns as SQL LIKE patterns (`*` → `%`; `%`, `_` and `\` escaped with
 * `\`, LIKE's default escape), for reading a timeline with the filter applied in the query.
 */
export function likePatterns(list: string[]): string[] {
  return list.map((p) => p.replace(/[\\%_]/g, '\\$&').replace(/\*/g, '%'));
}
