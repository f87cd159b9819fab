// The long-poll notifier: wakes exactly the waits a committed batch concerns, ends a wait
// whose client hangs up, and never lets a finished wait touch the next one of the same client.
import { describe, expect, it } from 'vitest';
import { SyncNotifier } from '../../src/syncapi/notifier.ts';
import { Hangup } from '../../src/syncapi/hangup.ts';
import { admitSlot } from '../../src/syncapi/writeSlices.ts';
import type { Projected } from '../../src/projections/projection.ts';
import type { RoomEvent } from '../../src/events/roomEvents.ts';

function roomEvent(roomId: string, type = 'm.room.message', stateKey?: string): Projected<RoomEvent> {
  const pdu = { type, room_id: roomId, sender: '@a:x', content: {}, ...(stateKey === undefined ? {} : { state_key: stateKey }) };
  return { seq: 1, roomId, shard: 0, event: { type: 'RoomPdu', v: 1, roomId, eventId: '$e', roomVersion: '10', pdu, origin: 'local' } as unknown as RoomEvent };
}

describe('SyncNotifier', () => {
  it('wakes the waits on a room with a new event, and only those', async () => {
    const n = new SyncNotifier();
    const a = n.wait({ userId: '@a:x', deviceId: 'A', roomIds: ['!r:x'] }, 60_000);
    let bDone = false;
    const b = n.wait({ userId: '@b:x', deviceId: 'B', roomIds: ['!other:x'] }, 200).then((v) => ((bDone = true), v));
    expect(n.waiting).toBe(2);
    n.onRoomEvents([roomEvent('!r:x')]);
    expect(typeof (await a)).toBe('number');
    expect(bDone).toBe(false);
    expect(n.waiting).toBe(1);
    expect(await b).toBe(false); // timed out, never woken
    expect(n.waiting).toBe(0);
  });

  it('client data of a room (receipts, typing) wakes its members and previews, not the waits that only peek it', async () => {
    const n = new SyncNotifier();
    const member = n.wait({ userId: '@m:x', deviceId: 'M', roomIds: ['!r:x'], clientDataRoomIds: ['!r:x'] }, 60_000);
    let peekerWoken = false;
    const peeker = n.wait({ userId: '@p:x', deviceId: 'P', roomIds: ['!r:x'] }, 200).then((v) => ((peekerWoken = v !== false), v));
    n.onClientData([], ['!r:x']);
    expect(typeof (await member)).toBe('number');
    expect(await peeker).toBe(false); // timed out, never woken
    expect(peekerWoken).toBe(false);
    // A room event still wakes the peeker.
    const again = n.wait({ userId: '@p:x', deviceId: 'P', roomIds: ['!r:x'] }, 60_000);
    n.onRoomEvents([roomEvent('!r:x')]);
    expect(typeof (await again)).toBe('number');
    expect(n.waiting).toBe(0);
  });

  it('wakes thousands of waits on one room, all of them', async () => {
    const n = new SyncNotifier();
    const waits = Array.from({ length: 2_500 }, (_, i) => n.wait({ userId: `@u${i}:x`, deviceId: 'D', roomIds: ['!big:x'] }, 60_000));
    n.onRoomEvents([roomEvent('!big:x')]);
    const results = await Promise.all(waits);
    expect(results.every((r) => typeof r === 'number')).toBe(true);
    expect(n.waiting).toBe(0);
  });

  it('holds new /sync requests while it wakes more than one slice of waits, and lets them in once all are woken', async () => {
    const n = new SyncNotifier();
    const waits = Array.from({ length: 500 }, (_, i) => n.wait({ userId: `@u${i}:x`, deviceId: 'D', roomIds: ['!burst:x'] }, 60_000));
    expect(admitSlot()).toBeUndefined();
    let woken = 0;
    for (const w of waits) void w.then(() => woken++);
    n.onRoomEvents([roomEvent('!burst:x')]);
    const request = admitSlot();
    expect(request).toBeInstanceOf(Promise);
    await request;
    // Let in only after the last slice: every wait had been woken.
    expect(woken).toBe(500);
    // One slice is not a burst.
    const few = Array.from({ length: 10 }, (_, i) => n.wait({ userId: `@f${i}:x`, deviceId: 'D', roomIds: ['!small:x'] }, 60_000));
    n.onRoomEvents([roomEvent('!small:x')]);
    expect(admitSlot()).toBeUndefined();
    await Promise.all(few);
  });

  it('ends a wait when its client hangs up, and an aborted client never waits', async () => {
    const n = new SyncNotifier();
    const hangup = new Hangup();
    const w = n.wait({ userId: '@a:x', deviceId: 'A', roomIds: ['!r:x'] }, 60_000, hangup);
    hangup.abort();
    expect(await w).toBe(false);
    expect(n.waiting).toBe(0);
  });

  it('a wait woken twice (by its room and by its user) leaves the next wait of the same client hangup-able', async () => {
    const n = new SyncNotifier();
    // Others first: @a's wait falls in a later slice of the room's wake-up.
    const others = Array.from({ length: 250 }, (_, i) => n.wait({ userId: `@u${i}:x`, deviceId: 'D', roomIds: ['!r:x'] }, 60_000));
    const hangup = new Hangup();
    const first = n.wait({ userId: '@a:x', deviceId: 'A', roomIds: ['!r:x'] }, 60_000, hangup);
    // A membership event for @a in !r wakes it through both indexes: its user's at once,
    // its room's a slice later.
    n.onRoomEvents([roomEvent('!r:x', 'm.room.member', '@a:x')]);
    expect(typeof (await first)).toBe('number');
    const second = n.wait({ userId: '@a:x', deviceId: 'A', roomIds: ['!r:x'] }, 60_000, hangup);
    // Let any slice of the earlier wake-ups run.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    await Promise.all(others);
    hangup.abort();
    // Ended by the hang-up itself, not by its timeout a minute later.
    expect(await Promise.race([second, new Promise((r) => setTimeout(() => r('still waiting'), 1_000))])).toBe(false);
    expect(n.waiting).toBe(0);
  });
});
