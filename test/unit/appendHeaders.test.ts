// An append's headers are written in their wire form by peekd (appendHeaders) instead of
// through the client's MsgHdrs: the bytes must be exactly the ones MsgHdrs encodes, or
// JetStream would lose the duplicate check or the stale-writer check without a word.
import { headers } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { appendHeaders } from '../../src/nats/appendAcks.ts';

/** What the client's publish calls on a header object (MsgHdrsImpl#encode; not in the MsgHdrs type). */
const wire = (h: unknown) => Buffer.from((h as { encode(): Uint8Array }).encode()).toString('latin1');

const viaClient = (msgId: string, seq: number) => {
  const h = headers();
  h.set('Nats-Msg-Id', msgId);
  h.set('Nats-Expected-Last-Subject-Sequence', String(seq));
  return wire(h);
};

const ours = (msgId: string, seq: number) => wire(appendHeaders(msgId, seq));

describe('appendHeaders', () => {
  it('encodes the message ID and expected sequence byte for byte as the client’s MsgHdrs does', () => {
    for (const [id, seq] of [
      ['4b0c7f7e-2f59-4e8e-a2f4-6d3b0b1f1c11:0', 0],
      ['cmd-1', 1],
      ['  padded id  ', 987_654_321_012],
      ['ünïcode-✓', 42],
    ] as const) {
      expect(ours(id, seq)).toBe(viaClient(id, seq));
    }
  });

  it('refuses a message ID with a line break, which would end the headers early', () => {
    expect(() => appendHeaders('a\r\nNats-Expected-Last-Subject-Sequence: 0', 5)).toThrow(/cannot contain/);
    expect(() => appendHeaders('a\nb', 5)).toThrow(/cannot contain/);
  });
});
