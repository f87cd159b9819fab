// The projections' commit pipeline: group commit (lingering) while nobody waits, at once when
// someone does, and nothing left behind when the reader is done with it.
import { describe, expect, it } from 'vitest';
import { CommitPipeline } from '../../src/projections/pipeline.ts';
import type { DecodedMessage } from '../../src/projections/projection.ts';

function message(seq: number): DecodedMessage<string> {
  return { events: [{ seq, roomId: '!r:x', shard: 0, event: `e${seq}` }] };
}

/** A pipeline whose commits are recorded and take `commitMs`. */
function recorder(options: { lingerMs?: number; urgent?: () => boolean; commitMs?: number; batchSize?: number }) {
  const commits: { events: string[]; last: number; at: number }[] = [];
  const start = performance.now();
  const pipeline = new CommitPipeline<string>(
    0,
    async (batch, last) => {
      commits.push({ events: batch.map((b) => b.event), last, at: performance.now() - start });
      if (options.commitMs) await new Promise((r) => setTimeout(r, options.commitMs));
    },
    { batchSize: options.batchSize ?? 100, mode: 'eager', limit: 1_000, lingerMs: options.lingerMs, urgent: options.urgent },
  );
  return { pipeline, commits };
}

const until = async (cond: () => boolean, ms = 2_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 1));
  }
};

describe('CommitPipeline lingering (group commit)', () => {
  it('commits the first event of a quiet stream at once, then gathers what follows within the linger into one commit', async () => {
    const { pipeline, commits } = recorder({ lingerMs: 50 });
    pipeline.add(1, message(1));
    await until(() => commits.length === 1);
    expect(commits[0]!.events).toEqual(['e1']);
    for (let seq = 2; seq <= 6; seq++) pipeline.add(seq, message(seq));
    // Within the linger nothing more is committed …
    await new Promise((r) => setTimeout(r, 10));
    expect(commits).toHaveLength(1);
    // … then the five events go in one transaction.
    await until(() => commits.length === 2);
    expect(commits[1]!.events).toEqual(['e2', 'e3', 'e4', 'e5', 'e6']);
    expect(commits[1]!.last).toBe(6);
    expect(commits[1]!.at - commits[0]!.at).toBeGreaterThanOrEqual(45);
  });

  it('without a linger commits whatever is pending as soon as no commit is in flight', async () => {
    const { pipeline, commits } = recorder({});
    pipeline.add(1, message(1));
    pipeline.add(2, message(2));
    await until(() => commits.length === 2);
    expect(commits.map((c) => c.events)).toEqual([['e1'], ['e2']]);
  });

  it('commits at once while someone waits (urgent), and hurry() ends a linger already begun', async () => {
    let waiting = false;
    const { pipeline, commits } = recorder({ lingerMs: 10_000, urgent: () => waiting });
    pipeline.add(1, message(1));
    await until(() => commits.length === 1);
    pipeline.add(2, message(2));
    await new Promise((r) => setTimeout(r, 20));
    expect(commits).toHaveLength(1); // lingering: 10 s
    waiting = true;
    pipeline.hurry();
    await until(() => commits.length === 2);
    expect(commits[1]!.events).toEqual(['e2']);
    pipeline.add(3, message(3));
    await until(() => commits.length === 3); // still urgent: no linger
  });

  it('does not linger over a full batch', async () => {
    const { pipeline, commits } = recorder({ lingerMs: 10_000, batchSize: 3 });
    pipeline.add(1, message(1));
    await until(() => commits.length === 1);
    for (let seq = 2; seq <= 4; seq++) pipeline.add(seq, message(seq));
    await until(() => commits.length === 2);
    expect(commits[1]!.events).toEqual(['e2', 'e3', 'e4']);
  });

  it('idle() commits what is lingering, so a stopping reader leaves nothing taken in uncommitted', async () => {
    const { pipeline, commits } = recorder({ lingerMs: 10_000 });
    pipeline.add(1, message(1));
    await until(() => commits.length === 1);
    pipeline.add(2, message(2));
    pipeline.add(3, message(3));
    await pipeline.idle();
    expect(commits.map((c) => c.last)).toEqual([1, 3]);
  });
});
