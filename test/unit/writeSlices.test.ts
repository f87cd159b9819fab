import { describe, expect, it } from 'vitest';
import { ADMIT_SLICE, admitSlot, holdConnection, MAX_HELD, MAX_HOLD_MS, SLICE, wakingBegins, wakingEnds, writeSlot } from '../../src/syncapi/writeSlices.ts';

const turn = () => new Promise<void>((r) => setImmediate(r));

describe('write slices', () => {
  it('lets SLICE answers through per event-loop turn, in order, and the rest in the turns after', async () => {
    await turn();
    await turn(); // start from a fresh turn
    const order: number[] = [];
    const turnOf: number[] = [];
    let t = 0;
    const ticking = (async () => {
      for (let i = 0; i < 4; i++) {
        await turn();
        t++;
      }
    })();
    const all = Array.from({ length: 2 * SLICE + 50 }, (_, i) => {
      const slot = writeSlot();
      const record = () => {
        order.push(i);
        turnOf.push(t);
      };
      if (!slot) return record();
      return slot.then(record);
    });
    await Promise.all(all);
    await ticking;
    expect(order).toEqual([...order].sort((a, b) => a - b));
    const perTurn = turnOf.reduce<Record<number, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});
    expect(Object.values(perTurn)).toEqual([SLICE, SLICE, 50]);
  });
});

describe('new /sync requests during a burst of wake-ups', () => {
  const settledWithin = async (p: Promise<void>, turns: number): Promise<boolean> => {
    let done = false;
    void p.then(() => (done = true));
    for (let i = 0; i < turns && !done; i++) await turn();
    return done;
  };

  it('go on at once when no burst is on', () => {
    expect(admitSlot()).toBeUndefined();
  });

  it('wait while a wake-up is waking its long-polls, and are let in ADMIT_SLICE per turn once it has', async () => {
    wakingBegins();
    const slots = Array.from({ length: ADMIT_SLICE + 10 }, () => admitSlot());
    expect(slots.every((s) => s instanceof Promise)).toBe(true);
    const order: number[] = [];
    const turnOf: number[] = [];
    let t = 0;
    slots.forEach((s, i) => void s!.then(() => (order.push(i), turnOf.push(t))));
    // Still waking: nobody gets in, however many turns pass.
    expect(await settledWithin(slots[0]!, 5)).toBe(false);
    wakingEnds();
    while (order.length < slots.length) {
      await turn();
      t++;
    }
    expect(order).toEqual([...order].sort((a, b) => a - b));
    const perTurn = turnOf.reduce<Record<number, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});
    expect(Object.values(perTurn)).toEqual([ADMIT_SLICE, 10]);
    expect(admitSlot()).toBeUndefined();
  });

  it('wait behind answers still queued for their turn', async () => {
    await turn();
    const answers = Array.from({ length: SLICE + 1 }, () => writeSlot());
    const request = admitSlot();
    expect(request).toBeInstanceOf(Promise);
    let answered = false;
    void answers.at(-1)!.then(() => (answered = true));
    await request;
    expect(answered).toBe(true);
  });

  it('are held at most MAX_HELD at once, and at most MAX_HOLD_MS', async () => {
    wakingBegins();
    try {
      const held = Array.from({ length: MAX_HELD }, () => admitSlot());
      expect(held.every((s) => s instanceof Promise)).toBe(true);
      expect(admitSlot()).toBeUndefined();
      const t0 = performance.now();
      await Promise.all(held);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(MAX_HOLD_MS - 50);
    } finally {
      wakingEnds();
    }
    await turn();
    expect(admitSlot()).toBeUndefined();
  });
});

describe('connections answered during a burst of wake-ups', () => {
  /** A socket's pause and resume, recorded (what holdConnection calls). */
  const resumed: number[] = [];
  let made = 0;
  const connection = () => {
    const id = made++;
    const c = { id, paused: false, resumes: 0, pause: () => void (c.paused = true), resume: () => void ((c.paused = false), c.resumes++, resumed.push(id)) };
    return c;
  };

  it('are left alone when no burst is on', async () => {
    await turn();
    await turn();
    const c = connection();
    holdConnection(c);
    expect(c.paused).toBe(false);
  });

  it('are not read from until the burst is over, then resumed ADMIT_SLICE per turn, in order', async () => {
    wakingBegins();
    const conns = Array.from({ length: ADMIT_SLICE + 7 }, () => connection());
    for (const c of conns) holdConnection(c);
    expect(conns.every((c) => c.paused)).toBe(true);
    for (let i = 0; i < 5; i++) await turn();
    expect(conns.some((c) => !c.paused)).toBe(false);
    wakingEnds();
    const perTurn: number[] = [];
    while (conns.some((c) => c.paused)) {
      await turn();
      perTurn.push(conns.filter((c) => !c.paused).length);
    }
    expect(perTurn.filter((n, i) => n !== (perTurn[i - 1] ?? 0))).toEqual([ADMIT_SLICE, ADMIT_SLICE + 7]);
    // Resumed once each, the first held first.
    expect(conns.map((c) => c.resumes)).toEqual(conns.map(() => 1));
    expect(resumed.slice(-conns.length)).toEqual(conns.map((c) => c.id));
  });

  it('are resumed after MAX_HOLD_MS even while the burst goes on', async () => {
    wakingBegins();
    try {
      const c = connection();
      holdConnection(c);
      const t0 = performance.now();
      while (c.paused) await new Promise((r) => setTimeout(r, 20));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(MAX_HOLD_MS - 50);
    } finally {
      wakingEnds();
    }
  });
});
