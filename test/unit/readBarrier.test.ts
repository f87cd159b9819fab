import { describe, expect, it } from 'vitest';
import { ReadBarrier, RECENT_PEEK_WRITES, type Positions } from '../../src/projections/readBarrier.ts';

/** A barrier over positions the test moves by hand; waits resolve when the position is reached. */
function setup() {
  const visible: Positions = { rooms: 0, peeks: 0 };
  const waits: { stream: 'rooms' | 'peeks'; seq: number; resolve: () => void }[] = [];
  const barrier = new ReadBarrier(
    (stream, seq) => (visible[stream] >= seq ? Promise.resolve() : new Promise<void>((resolve) => waits.push({ stream, seq, resolve }))),
    () => ({ ...visible }),
  );
  const advance = (stream: 'rooms' | 'peeks', seq: number) => {
    visible[stream] = seq;
    for (const w of waits.filter((w) => w.stream === stream && w.seq <= seq)) w.resolve();
  };
  return { barrier, advance, waits };
}

const wrote = (rooms: number, peeks: number) =>
  ({
    roomEvents: rooms ? [{ seq: rooms }] : [],
    peekEvents: peeks ? [{ seq: peeks }] : [],
  }) as never;

describe('ReadBarrier', () => {
  it('lets a read through at once when nothing acknowledged is missing', async () => {
    const { barrier, waits } = setup();
    await barrier.forReads();
    barrier.wrote(wrote(0, 0));
    await barrier.forReads();
    expect(waits).toEqual([]);
  });

  it('makes a read wait for the highest positions acknowledged to anyone', async () => {
    const { barrier, advance } = setup();
    barrier.wrote(wrote(5000, 0), { userId: '@a:x', deviceId: 'A' });
    barrier.wrote(wrote(3000, 7000), { userId: '@b:x', deviceId: 'B' });
    let done = false;
    const read = barrier.forReads().then(() => (done = true));
    advance('rooms', 5000);
    await Promise.resolve();
    expect(done).toBe(false); // PEEKS 7000 is not visible yet
    advance('peeks', 7000);
    await read;
    expect(done).toBe(true);
  });

  it('pendingReads is undefined while nothing acknowledged is missing, and otherwise the wait', async () => {
    const { barrier, advance, waits } = setup();
    expect(barrier.pendingReads()).toBeUndefined();
    barrier.wrote(wrote(2000, 0));
    const pending = barrier.pendingReads();
    expect(pending).toBeInstanceOf(Promise);
    advance('rooms', 2000);
    await pending;
    expect(barrier.pendingReads()).toBeUndefined();
    expect(waits).toHaveLength(1);
  });

  it('a session waits for its own writes only', async () => {
    const { barrier, advance } = setup();
    barrier.wrote(wrote(0, 1000), { userId: '@a:x', deviceId: 'A' });
    barrier.wrote(wrote(9000, 9000), { userId: '@b:x', deviceId: 'B' });
    advance('peeks', 1000);
    await barrier.forSession('@a:x', 'A'); // resolves although B's writes are not visible
    let done = false;
    void barrier.forSession('@b:x', 'B').then(() => (done = true));
    await Promise.resolve();
    expect(done).toBe(false);
  });

  it('counts a session’s PEEKS writes that reads cannot see yet, and gives up counting past what it remembers', () => {
    const { barrier, advance } = setup();
    const me = { userId: '@a:x', deviceId: 'A' };
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(0);
    for (const seq of [1000, 2000, 3000]) barrier.wrote(wrote(0, seq), me);
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(3);
    advance('peeks', 2000);
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(1);
    advance('peeks', 3000);
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(0);
    // Up to RECENT_PEEK_WRITES unseen writes are counted; past that, it cannot tell.
    for (let i = 1; i < RECENT_PEEK_WRITES; i++) barrier.wrote(wrote(0, 3000 + i * 1000), me);
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(RECENT_PEEK_WRITES - 1);
    for (let i = RECENT_PEEK_WRITES; i <= RECENT_PEEK_WRITES + 10; i++) barrier.wrote(wrote(0, 3000 + i * 1000), me);
    expect(barrier.unseenPeekWrites(me.userId, me.deviceId)).toBe(Infinity);
  });

  it('a session it does not remember may own any unseen write; the seed counts the log at start-up as written', async () => {
    const { barrier, advance } = setup();
    barrier.seed({ rooms: 0, peeks: 4000 });
    expect(barrier.unseenPeekWrites('@new:x', 'N')).toBe(Infinity);
    let done = false;
    const read = barrier.forReads().then(() => (done = true));
    await Promise.resolve();
    expect(done).toBe(false);
    advance('peeks', 4000);
    await read;
    expect(barrier.unseenPeekWrites('@new:x', 'N')).toBe(0);
  });
});
