// Many /sync answers become ready at the same moment: one new event wakes thousands of
// long-polls, and when they share one computed answer (sync.ts) every one of them resumes
// in the same microtask burst. Written all at once, they would hold the event loop for the
// whole burst (nothing else read, no timer run). Each answer therefore takes a slot first:
// SLICE per turn of the event loop, the rest in the turns after, in order.

/** Answers written per turn of the event loop. */
export const SLICE = 200;
/** New /sync requests let in per turn once a burst of answers is out. */
export const ADMIT_SLICE = 50;
/** The longest a new /sync request is held, however long bursts follow one another. */
export const MAX_HOLD_MS = 500;
/**
 * The most requests held at once; later ones go on at once. Each held request keeps its
 * objects alive across young-generation collections: at 10,000 held, promoting them cost
 * more than the order saved (the 10,000-device p99 rose by a third).
 */
export const MAX_HELD = 1_000;

let used = 0;
let scheduled = false;
const queue: (() => void)[] = [];
/** /sync requests that arrived during a burst, waiting for it to end. */
const held: (() => void)[] = [];
/** Connections answered during a burst and not read from until it ends (holdConnection). */
const paused: Connection[] = [];
/** Wake-ups still waking their long-polls (the notifier's slices). */
let waking = 0;
/** The oldest held request has waited MAX_HOLD_MS: let them in, burst or not. */
let overdue = false;
let holdTimer: NodeJS.Timeout | undefined;

const bursting = () => waking > 0 || queue.length > 0;
const anyHeld = () => held.length > 0 || paused.length > 0;

function nextTurn(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    const ready = queue.splice(0, SLICE);
    used = ready.length;
    for (const go of ready) go();
    // The answers first; the requests held behind them once every answer is out.
    const admit = overdue || !bursting();
    if (admit) {
      for (const go of held.splice(0, ADMIT_SLICE)) go();
      for (const c of paused.splice(0, ADMIT_SLICE)) c.resume();
    }
    if (!anyHeld() && holdTimer) {
      clearTimeout(holdTimer);
      holdTimer = undefined;
      overdue = false;
    }
    if (used > 0 || queue.length > 0 || (anyHeld() && admit)) nextTurn();
  });
}

/** Undefined when the answer may be written now; otherwise resolves when its turn comes. */
export function writeSlot(): Promise<void> | undefined {
  if (used < SLICE && queue.length === 0) {
    used++;
    nextTurn();
    return undefined;
  }
  nextTurn();
  return new Promise<void>((resolve) => queue.push(resolve));
}

/**
 * A wake-up of many long-polls begins (the notifier, before its first slice) or has woken
 * all of them (after its last). Between the two, and while answers wait for their turn, new
 * /sync requests are held (admitSlot).
 */
export function wakingBegins(): void {
  waking++;
}

export function wakingEnds(): void {
  waking--;
  if (anyHeld() && !bursting()) nextTurn();
}

/** Starts the MAX_HOLD_MS bound when the first request or connection is held. */
function holdStarts(): void {
  if (holdTimer) return;
  holdTimer = setTimeout(() => {
    overdue = true;
    nextTurn();
  }, MAX_HOLD_MS).unref();
}

/**
 * A new /sync request asks before it does any work. Undefined when no burst is on (or
 * MAX_HELD are held already); otherwise resolves once it is over (every woken long-poll
 * woken, every answer written), ADMIT_SLICE requests per turn, and after MAX_HOLD_MS at the
 * latest. The devices answered first in a burst ask again at once: handled between the
 * slices, their new long-polls (authentication, the sync computation, the notifier's
 * indexes) would delay the answers of the devices still waiting by as much.
 */
export function admitSlot(): Promise<void> | undefined {
  if (held.length >= MAX_HELD) return undefined;
  if (held.length === 0 && !bursting()) return undefined;
  holdStarts();
  return new Promise<void>((resolve) => held.push(resolve));
}

/** How many /sync requests (admitSlot) and connections (holdConnection) are held now. */
export function holding(): { requests: number; connections: number } {
  return { requests: held.length, connections: paused.length };
}

/** What holdConnection needs of a socket. */
export interface Connection {
  pause(): void;
  resume(): void;
}

/**
 * An answer has just been written to `socket` (a keep-alive connection). During a burst the
 * connection is not read from again until the burst is over (ADMIT_SLICE connections per
 * turn, MAX_HOLD_MS at the latest): the device's next request, which it sends as soon as it
 * has the answer, waits in the kernel's socket buffer, where it costs nothing, instead of
 * being parsed, routed and held as a request (admitSlot), whose objects would outlive
 * young-generation collections. Node's HTTP server stops reading a paused socket
 * (`readStop`) and starts again on resume. Outside a burst, nothing happens.
 */
export function holdConnection(socket: Connection): void {
  if (!bursting()) return;
  socket.pause();
  paused.push(socket);
  holdStarts();
}
