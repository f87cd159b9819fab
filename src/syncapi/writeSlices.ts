// Many /sync answers become ready at the same moment: one new event wakes thousands of
// long-polls, and when they share one computed answer (sync.ts) every one of them resumes
// in the same microtask burst. Written all at once, they would hold the event loop for the
// whole burst (nothing else read, no timer run). Each answer therefore takes a slot first:
// SLICE per turn of the event loop, the rest in the turns after, in order.

/** Answers written per turn of the event loop. */
export const SLICE = 200;

let used = 0;
let scheduled = false;
const queue: (() => void)[] = [];

function nextTurn(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    const ready = queue.splice(0, SLICE);
    used = ready.length;
    for (const go of ready) go();
    if (used > 0 || queue.length > 0) nextTurn();
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
