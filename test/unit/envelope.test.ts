// The log's unit: envelopes (one message per decision), positions (seq × 1000 + index),
// legacy bare events, and the per-event shape checks of both stream contracts.
import { describe, expect, it } from 'vitest';
import { MAX_EVENTS_PER_ENVELOPE, decodeEnvelope, eachEvent, encodeEnvelope, position, seqOfPosition, storedEvents, throughSeq } from '../../src/events/envelope.ts';
import { decodePeekEnvelope, decodePeekEvents, encodePeekEvent, peekEventOf, type PeekExpired, type PeekRenewed, type PeekStarted } from '../../src/events/peekEvents.ts';
import { decodeRoomEnvelope, encodeRoomEvent, roomEventOf, type RoomPduAppended } from '../../src/events/roomEvents.ts';

const ROOM = '!room:example.org';
const DEVICE = { kind: 'device', userId: '@alice:example.org', deviceId: 'DEV' } as const;

const started: PeekStarted = { type: 'PeekStarted', v: 1, roomId: ROOM, peek: DEVICE, at: 1000, expiresAt: 5000, roomSeq: 7 };
const renewed: PeekRenewed = { type: 'PeekRenewed', v: 1, roomId: ROOM, peek: DEVICE, at: 2000, expiresAt: 6000 };
const expired: PeekExpired = { type: 'PeekExpired', v: 1, roomId: ROOM, peek: DEVICE, at: 3000, reason: 'unpeeked', roomSeq: 9 };
const roomPdu: RoomPduAppended = {
  type: 'RoomPdu',
  v: 1,
  roomId: ROOM,
  eventId: '$abc',
  roomVersion: '10',
  origin: 'local',
  pdu: {
    type: 'm.room.message',
    room_id: ROOM,
    sender: '@alice:example.org',
    content: { body: 'hi' },
    origin_server_ts: 1000,
    depth: 3,
    prev_events: [],
    auth_events: [],
    hashes: { sha256: 'x' },
    signatures: {},
  },
};

const json = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value), 'utf8');
/** A decoder that keeps every value as is, and records whether it was read as legacy. */
const raw = (value: unknown, legacy: boolean): { value: unknown; legacy: boolean } => ({ value, legacy });

describe('positions', () => {
  it('flatten (seq, index) as seq × 1000 + index and map back to the seq', () => {
    expect(MAX_EVENTS_PER_ENVELOPE).toBe(1000);
    expect(position(1, 0)).toBe(1000);
    expect(position(1, 999)).toBe(1999);
    expect(position(42, 3)).toBe(42_003);
    for (const seq of [1, 2, 999, 1000, 1001, 123_456_789, 9_000_000_000]) {
      for (const index of [0, 1, 500, MAX_EVENTS_PER_ENVELOPE - 1]) {
        const pos = position(seq, index);
        expect(Number.isSafeInteger(pos)).toBe(true);
        expect(seqOfPosition(pos)).toBe(seq);
        expect(pos - seq * MAX_EVENTS_PER_ENVELOPE).toBe(index);
      }
    }
    expect(seqOfPosition(0)).toBe(0);
    expect(seqOfPosition(999)).toBe(0);
    expect(seqOfPosition(1000)).toBe(1);
  });

  it('throughSeq covers every event of an envelope and nothing of the next', () => {
    expect(throughSeq(0)).toBe(0);
    expect(throughSeq(-1)).toBe(0);
    expect(throughSeq(1)).toBe(1999);
    for (const seq of [1, 2, 17, 1000, 123_456_789]) {
      const through = throughSeq(seq);
      // The largest position of envelope `seq`.
      expect(through).toBe(position(seq, MAX_EVENTS_PER_ENVELOPE - 1));
      expect(seqOfPosition(through)).toBe(seq);
      expect(through).toBeGreaterThanOrEqual(position(seq, 0));
      // Strictly before the first event of the next envelope, and after the previous one's.
      expect(through).toBeLessThan(position(seq + 1, 0));
      expect(through + 1).toBe(position(seq + 1, 0));
      expect(throughSeq(seq - 1)).toBeLessThan(position(seq, 0));
    }
  });

  it('orders the events of consecutive envelopes by (seq, index)', () => {
    const positions: number[] = [];
    for (let seq = 1; seq <= 4; seq++) for (const index of [0, 1, 2, MAX_EVENTS_PER_ENVELOPE - 1]) positions.push(position(seq, index));
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(new Set(positions).size).toBe(positions.length);
  });
});

describe('encodeEnvelope', () => {
  it('writes the wire shape { envelope: 1, commandId, events }', () => {
    const data = encodeEnvelope('cmd-1', [started, expired]);
    expect(JSON.parse(Buffer.from(data).toString('utf8'))).toEqual({ envelope: 1, commandId: 'cmd-1', events: [started, expired] });
  });

  it('refuses an empty envelope and one of more than 1000 events', () => {
    expect(() => encodeEnvelope('cmd', [])).toThrow(RangeError);
    expect(() =>
      encodeEnvelope(
        'cmd',
        Array.from({ length: MAX_EVENTS_PER_ENVELOPE + 1 }, () => renewed),
      ),
    ).toThrow(RangeError);
    // The limits themselves are fine.
    expect(decodePeekEvents(encodeEnvelope('cmd', [renewed]))).toEqual([renewed]);
    const full = encodeEnvelope(
      'cmd',
      Array.from({ length: MAX_EVENTS_PER_ENVELOPE }, () => renewed),
    );
    expect(decodePeekEvents(full)).toHaveLength(MAX_EVENTS_PER_ENVELOPE);
  });
});

describe('decodeEnvelope', () => {
  it('round-trips an envelope with its commandId, not as legacy', () => {
    const env = decodeEnvelope(encodeEnvelope('cmd-rt', [1, 'two', { three: 3 }]), raw);
    expect(env.commandId).toBe('cmd-rt');
    expect(env.events).toEqual([
      { value: 1, legacy: false },
      { value: 'two', legacy: false },
      { value: { three: 3 }, legacy: false },
    ]);
    expect(decodePeekEnvelope(encodeEnvelope('cmd-peek', [started, renewed, expired]))).toEqual({
      commandId: 'cmd-peek',
      events: [started, renewed, expired],
    });
    expect(decodeRoomEnvelope(encodeEnvelope('cmd-room', [roomPdu]))).toEqual({ commandId: 'cmd-room', events: [roomPdu] });
  });

  it('reads a message that is a view into a larger buffer, as the NATS client hands them over, and reads bytes as UTF-8 did before', () => {
    const bytes = encodeEnvelope('cmd-view', [started]);
    const big = Buffer.alloc(bytes.length + 64, 0x7b);
    big.set(bytes, 32);
    const view = new Uint8Array(big.buffer, big.byteOffset + 32, bytes.length);
    expect(decodePeekEnvelope(view)).toEqual({ commandId: 'cmd-view', events: [started] });
    // A byte-order mark is not JSON: the message is no envelope (the runner quarantines it).
    expect(() => decodeEnvelope(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]), raw)).toThrow();
    // A byte that is no UTF-8 reads as U+FFFD, as Buffer#toString('utf8') reads it.
    const bad = Buffer.concat([Buffer.from('{"envelope":1,"commandId":"a'), Buffer.from([0xff]), Buffer.from('b","events":[]}')]);
    expect(decodeEnvelope(bad, raw).commandId).toBe('a\uFFFDb');
  });

  it('keeps unknown shapes as null at their index, so known events keep their positions', () => {
    const data = json({ envelope: 1, commandId: 'cmd-mixed', events: [started, { v: 2, type: 'PeekStarted' }, expired, { type: 'Nope', v: 1 }, renewed] });
    const env = decodePeekEnvelope(data);
    expect(env.commandId).toBe('cmd-mixed');
    expect(env.events).toEqual([started, null, expired, null, renewed]);
    // Positions come from the index in the message, not from the count of known events.
    expect(storedEvents(5, env.events)).toEqual([
      { seq: position(5, 0), event: started },
      { seq: position(5, 2), event: expired },
      { seq: position(5, 4), event: renewed },
    ]);
    const seen: [string, number][] = [];
    eachEvent(5, env.events, (e, pos) => seen.push([e.type, pos]));
    expect(seen).toEqual([
      ['PeekStarted', 5000],
      ['PeekExpired', 5002],
      ['PeekRenewed', 5004],
    ]);
    // A peek event in ROOMS is an unknown shape there, and vice versa.
    expect(decodeRoomEnvelope(encodeEnvelope('c', [started, roomPdu])).events).toEqual([null, roomPdu]);
    expect(decodePeekEnvelope(encodeEnvelope('c', [roomPdu, started])).events).toEqual([null, started]);
  });

  it('does not convert roomSeq inside an envelope (it is already a position)', () => {
    const env = decodePeekEnvelope(
      encodeEnvelope('cmd', [
        { ...started, roomSeq: 7001 },
        { ...expired, roomSeq: 12 },
      ]),
    );
    expect(env.events).toEqual([
      { ...started, roomSeq: 7001 },
      { ...expired, roomSeq: 12 },
    ]);
  });

  it('reads a message without `envelope: 1` as one legacy bare event at index 0, roomSeq converted', () => {
    const legacy = decodeEnvelope(encodePeekEvent(started), raw);
    expect(legacy).toEqual({ events: [{ value: started, legacy: true }] });
    expect(legacy.commandId).toBeUndefined();

    expect(decodePeekEnvelope(encodePeekEvent(started))).toEqual({ events: [{ ...started, roomSeq: position(7, 0) }] });
    expect(decodePeekEnvelope(encodePeekEvent(expired))).toEqual({ events: [{ ...expired, roomSeq: position(9, 0) }] });
    expect(decodePeekEvents(encodePeekEvent(renewed))).toEqual([renewed]);
    // No roomSeq, or 0 (nothing yet): left as it was.
    const { roomSeq: _omit, ...noRoomSeq } = started;
    expect(decodePeekEvents(encodePeekEvent(noRoomSeq))).toEqual([noRoomSeq]);
    expect(decodePeekEvents(encodePeekEvent({ ...expired, roomSeq: 0 }))).toEqual([{ ...expired, roomSeq: 0 }]);
    expect(storedEvents(3, decodePeekEvents(encodePeekEvent(renewed)))).toEqual([{ seq: position(3, 0), event: renewed }]);

    expect(decodeRoomEnvelope(encodeRoomEvent(roomPdu))).toEqual({ events: [roomPdu] });
    // An unknown bare shape is one null at index 0.
    expect(decodePeekEnvelope(json({ v: 2, type: 'PeekStarted' }))).toEqual({ events: [null] });
    expect(decodePeekEnvelope(json(null))).toEqual({ events: [null] });
    // Not an envelope unless `envelope` is 1 and `events` an array.
    expect(decodeEnvelope(json({ envelope: 2, events: [started] }), raw).events).toHaveLength(1);
    expect(decodeEnvelope(json({ envelope: 1, events: 'x' }), raw).events).toEqual([{ value: { envelope: 1, events: 'x' }, legacy: true }]);
  });

  it('keeps a string commandId only', () => {
    expect(decodeEnvelope(json({ envelope: 1, events: [1] }), raw).commandId).toBeUndefined();
    expect(decodeEnvelope(json({ envelope: 1, commandId: 42, events: [1] }), raw).commandId).toBeUndefined();
    expect(decodeEnvelope(json({ envelope: 1, commandId: '', events: [1] }), raw).commandId).toBe('');
  });

  it('throws on bytes that are not JSON', () => {
    expect(() => decodeEnvelope(Buffer.from('not json', 'utf8'), raw)).toThrow(SyntaxError);
    expect(() => decodePeekEnvelope(new Uint8Array())).toThrow(SyntaxError);
  });
});

describe('event shape checks', () => {
  const notObjects: unknown[] = [null, undefined, 1, 'PeekStarted', true];

  it('peekEventOf accepts the three v1 peek events and rejects the rest', () => {
    for (const e of [started, renewed, expired]) {
      expect(peekEventOf(e, false)).toEqual(e);
    }
    for (const v of notObjects) {
      expect(peekEventOf(v, false)).toBeNull();
      expect(peekEventOf(v, true)).toBeNull();
    }
    expect(peekEventOf([], false)).toBeNull();
    expect(peekEventOf({}, false)).toBeNull();
    for (const v of [0, 2, '1', undefined]) {
      expect(peekEventOf({ ...started, v }, false)).toBeNull();
      expect(peekEventOf({ ...started, v }, true)).toBeNull();
    }
    for (const type of ['RoomPdu', 'PeekDeleted', 'peekstarted', undefined]) {
      expect(peekEventOf({ ...expired, type }, false)).toBeNull();
      expect(peekEventOf({ ...expired, type }, true)).toBeNull();
    }
    // Only legacy reads convert roomSeq; the input is not mutated.
    const input = { ...started };
    expect(peekEventOf(input, true)).toEqual({ ...started, roomSeq: 7000 });
    expect(input.roomSeq).toBe(7);
    expect(peekEventOf(input, false)).toEqual(started);
  });

  it('roomEventOf accepts v1 RoomPdu records and rejects the rest', () => {
    expect(roomEventOf(roomPdu)).toEqual(roomPdu);
    for (const v of notObjects) expect(roomEventOf(v)).toBeNull();
    expect(roomEventOf([])).toBeNull();
    expect(roomEventOf({})).toBeNull();
    for (const v of [0, 2, '1', undefined]) expect(roomEventOf({ ...roomPdu, v })).toBeNull();
    for (const type of ['PeekStarted', 'roompdu', undefined]) expect(roomEventOf({ ...roomPdu, type })).toBeNull();
  });
});
