import { describe, expect, it } from 'vitest';
import { SLICE, writeSlot } from '../../src/syncapi/writeSlices.ts';

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
