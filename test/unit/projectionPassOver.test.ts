// A projection may pass over log messages by their bytes (Projection.mayTouch): the
// federation tables take only server peeks, so a message of device peeks is not decoded for
// them. Passing over must never lose a server peek, and must only save work.
import { describe, expect, it } from 'vitest';
import { encodeEnvelope } from '../../src/events/envelope.ts';
import { encodePeekEvent, type PeekEvent, type PeekRef } from '../../src/events/peekEvents.ts';
import { federationPeeksProjection } from '../../src/projections/federationPeeks.ts';
import { takeMessage, type DecodedMessage } from '../../src/projections/projection.ts';
import { syncPeeksProjection } from '../../src/projections/syncPeeks.ts';

const ROOM = '!room:example.org';
const peek = (ref: PeekRef, type: PeekEvent['type'] = 'PeekStarted'): PeekEvent =>
  type === 'PeekExpired' ? { type, v: 1, roomId: ROOM, peek: ref, at: 1000, reason: 'unpeeked' } : { type, v: 1, roomId: ROOM, peek: ref, at: 1000, expiresAt: 5000 };
const device = (deviceId = 'DEV', userId = '@alice:example.org'): PeekRef => ({ kind: 'device', userId, deviceId });
const inbound: PeekRef = { kind: 'inbound', server: 'remote.example', peekId: 'p1' };
const outbound: PeekRef = { kind: 'outbound', server: 'remote.example', peekId: 'p2' };
const mayTouch = federationPeeksProjection.mayTouch!;

describe('federation_peeks passes over messages that hold no server peek', () => {
  it('decodes every message that may hold a server peek, in an envelope or bare, whatever its place', () => {
    for (const ref of [inbound, outbound]) {
      for (const type of ['PeekStarted', 'PeekRenewed', 'PeekExpired'] as const) {
        expect(mayTouch(encodeEnvelope('c1', [peek(ref, type)]))).toBe(true);
        expect(mayTouch(encodePeekEvent(peek(ref, type)))).toBe(true);
        expect(mayTouch(encodeEnvelope('c2', [peek(device()), peek(device('D2')), peek(ref, type)]))).toBe(true);
      }
    }
  });

  it('passes over envelopes and bare events of device peeks only', () => {
    for (const type of ['PeekStarted', 'PeekRenewed', 'PeekExpired'] as const) {
      expect(mayTouch(encodeEnvelope('c1', [peek(device(), type)]))).toBe(false);
      expect(mayTouch(encodePeekEvent(peek(device(), type)))).toBe(false);
    }
    expect(mayTouch(Buffer.from('this is { not JSON'))).toBe(false);
  });

  it('errs towards decoding: IDs that look like the mark, and bytes in the middle of a larger buffer', () => {
    // A device ID "inbound" is decoded (and then ignored by the projection): harmless.
    expect(mayTouch(encodeEnvelope('c1', [peek(device('inbound'))]))).toBe(true);
    // A command ID with a quote is escaped (\"), so it is no mark.
    expect(mayTouch(encodeEnvelope('re"bound"', [peek(device())]))).toBe(false);
    // NATS hands messages over as views into its read buffer: only the view's bytes count.
    const inside = Buffer.concat([Buffer.from('"inbound"'), Buffer.from(encodeEnvelope('c1', [peek(device())])), Buffer.from('"outbound"')]);
    const view = new Uint8Array(inside.buffer, inside.byteOffset + 9, inside.length - 19);
    expect(mayTouch(view)).toBe(false);
  });

  it('takeMessage decodes only what the projection may take, and every message for the others', () => {
    let decodes = 0;
    const decoded = (): DecodedMessage<PeekEvent> => {
      decodes++;
      return { events: [] };
    };
    const deviceOnly = encodeEnvelope('c1', [peek(device())]);
    const serverPeek = encodeEnvelope('c2', [peek(inbound)]);
    expect(takeMessage(federationPeeksProjection, deviceOnly, decoded)).toEqual({ events: [] });
    expect(decodes).toBe(0);
    takeMessage(federationPeeksProjection, serverPeek, decoded);
    expect(decodes).toBe(1);
    // A projection without mayTouch (sync_peeks) decodes everything.
    takeMessage(syncPeeksProjection, deviceOnly, decoded);
    expect(decodes).toBe(2);
  });
});
