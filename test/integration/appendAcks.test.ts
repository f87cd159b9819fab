// The event log's own publish-with-acknowledgement (src/nats/appendAcks.ts) against a real
// JetStream: the answers JetStream gives, and the faults that must come back retryable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JetStreamApiError } from '@nats-io/jetstream';
import { AckedPublisher } from '../../src/nats/appendAcks.ts';
import { connectNats } from '../../src/nats/connection.ts';
import { isTransient, isWrongLastSequence, ServiceUnavailableError } from '../../src/nats/errors.ts';
import { createTestStreams, natsUrl, uniqueName, type TestStreams } from '../helpers/services.ts';

const bytes = (s: string): Uint8Array => Buffer.from(s, 'utf8');

describe('AckedPublisher', () => {
  let streams: TestStreams;

  beforeAll(async () => {
    streams = await createTestStreams(4);
  });

  afterAll(async () => {
    await streams?.cleanup();
  });

  const subject = (label: string) => streams.naming.roomSubject('peeks', `!${uniqueName(label)}:example.org`);

  it('answers with the stream sequence, recognises a retried message ID, and refuses a stale writer with 10071', async () => {
    const acks = new AckedPublisher(streams.nc);
    const s = subject('acks');
    const first = await acks.publish(s, bytes('a'), uniqueName('m'), 0);
    expect(first.stream).toBe(streams.naming.streamName('peeks'));
    expect(first.duplicate).toBe(false);
    const again = await acks.publish(s, bytes('a'), 'same-id-' + first.seq, first.seq);
    const dup = await acks.publish(s, bytes('a'), 'same-id-' + first.seq, again.seq);
    expect(dup).toEqual({ stream: first.stream, seq: again.seq, duplicate: true });
    const stale = await acks.publish(s, bytes('b'), uniqueName('m'), first.seq).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(JetStreamApiError);
    expect(isWrongLastSequence(stale)).toBe(true);
    expect(isTransient(stale)).toBe(false);
  });

  it('many appends in flight at once each get their own answer, in order', async () => {
    const acks = new AckedPublisher(streams.nc);
    const subjects = Array.from({ length: 200 }, (_, i) => subject(`many${i}`));
    const answers = await Promise.all(subjects.map((s) => acks.publish(s, bytes('x'), uniqueName('m'), 0)));
    const seqs = answers.map((a) => a.seq);
    expect(new Set(seqs).size).toBe(200);
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
  });

  it('an event loop held up past the timeout does not time out an append JetStream answered meanwhile', async () => {
    const acks = new AckedPublisher(streams.nc, 300);
    const s = subject('held');
    const first = await acks.publish(s, bytes('a'), uniqueName('m'), 0);
    const second = acks.publish(s, bytes('b'), uniqueName('m'), first.seq);
    // The publish goes out (peekd's connection writes once per turn)…
    await new Promise((r) => setImmediate(r));
    // …and the loop is held (a long synchronous task) well past the timeout while JetStream answers.
    const until = performance.now() + 1_200;
    while (performance.now() < until);
    const answer = await second;
    expect(answer.seq).toBeGreaterThan(first.seq);
    expect(answer.duplicate).toBe(false);
  });

  it('a subject no stream takes (no responders) fails at once, retryably', async () => {
    const acks = new AckedPublisher(streams.nc);
    const started = performance.now();
    const err = await acks.publish(`nostream.${uniqueName('x')}`, bytes('x'), uniqueName('m'), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect(isTransient(err)).toBe(true);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('an append nobody answers times out retryably; a responder that is not JetStream is refused', async () => {
    const silent = `silent.${uniqueName('x')}`;
    const sub = streams.nc.subscribe(silent, { callback: () => undefined });
    const garbled = `garbled.${uniqueName('x')}`;
    const sub2 = streams.nc.subscribe(garbled, { callback: (_e, m) => void m.respond(bytes('{"hello":1}')) });
    try {
      const acks = new AckedPublisher(streams.nc, 300);
      const err = await acks.publish(silent, bytes('x'), uniqueName('m'), 0).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ServiceUnavailableError);
      expect(String((err as Error).message)).toMatch(/within 300 ms/);
      expect(isTransient(err)).toBe(true);
      await expect(acks.publish(garbled, bytes('x'), uniqueName('m'), 0)).rejects.toThrow(/invalid ack response/);
    } finally {
      sub.unsubscribe();
      sub2.unsubscribe();
    }
  });

  it('an append waiting when its connection closes fails at once, retryably', async () => {
    const nc = await connectNats(natsUrl());
    const silent = `silent.${uniqueName('x')}`;
    const sub = streams.nc.subscribe(silent, { callback: () => undefined });
    await streams.nc.flush();
    try {
      const acks = new AckedPublisher(nc, 60_000);
      const started = performance.now();
      const pending = acks.publish(silent, bytes('x'), uniqueName('m'), 0).catch((e: unknown) => e);
      await nc.flush();
      await nc.close();
      const err = await pending;
      expect(err).toBeInstanceOf(ServiceUnavailableError);
      expect(isTransient(err)).toBe(true);
      expect(performance.now() - started).toBeLessThan(5_000);
    } finally {
      sub.unsubscribe();
    }
  });
});
