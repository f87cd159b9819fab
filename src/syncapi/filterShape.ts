// The shape of a sync filter (client-server API, "Filtering"): what POST /user/{userId}/filter
// stores and /sync?filter={…} takes inline. Unknown keys are allowed (clients send newer
// fields); known keys must have their types. Returns what is wrong, or null.

type Check = (v: unknown, at: string) => string | null;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

const bool: Check = (v, at) => (typeof v === 'boolean' ? null : `${at} must be true or false`);
const integer: Check = (v, at) => (Number.isSafeInteger(v) && (v as number) >= 0 ? null : `${at} must be a non-negative integer`);
const strings: Check = (v, at) => (Array.isArray(v) && v.every((s) => typeof s === 'string') ? null : `${at} must be a list of strings`);
const oneOf =
  (...values: string[]): Check =>
  (v, at) =>
    typeof v === 'string' && values.includes(v) ? null : `${at} must be one of ${values.join(', ')}`;

function object(fields: Record<string, Check>): Check {
  return (v, at) => {
    if (!isObject(v)) return `${at} must be an object`;
    for (const [key, check] of Object.entries(fields)) {
      if (v[key] === undefined) continue;
      const problem = check(v[key], at === '' ? key : `${at}.${key}`);
      if (problem) return problem;
    }
    return null;
  };
}

const eventFilter = { limit: integer, types: strings, not_types: strings, senders: strings, not_senders: strings };
const roomEventFilter = object({
  ...eventFilter,
  rooms: strings,
  not_rooms: strings,
  contains_url: bool,
  lazy_load_members: bool,
  include_redundant_members: bool,
  unread_thread_notifications: bool,
});

const filter = object({
  event_fields: strings,
  event_format: oneOf('client', 'federation'),
  presence: object(eventFilter),
  account_data: object(eventFilter),
  room: object({
    rooms: strings,
    not_rooms: strings,
    include_leave: bool,
    timeline: roomEventFilter,
    state: roomEventFilter,
    ephemeral: roomEventFilter,
    account_data: roomEventFilter,
  }),
});

/** What is wrong with a filter's shape, or null when it is a filter. */
export function filterProblem(value: unknown): string | null {
  return filter(value, '');
}

/** What is wrong with a room event filter's shape (/messages' and /context's `filter`), or null. */
export function roomEventFilterProblem(value: unknown): string | null {
  return roomEventFilter(value, '');
}
