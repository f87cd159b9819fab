// Reading, decoding and committing overlap: a projection's events gather here while the
// previous batch commits, so the reader waits for Postgres only when it is a bounded
// distance ahead. Used by the live runner (group commit) and by a rebuild's catch-up
// (full batches); both commit through `commitBatch`, one transaction at a time.
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import type { DecodedMessage, Projected, Quarantined } from './projection.ts';

/** Commits `batch` (events up to `lastSeq`) and the quarantined messages it passes. */
export type CommitFn<E> = (batch: Projected<E>[], lastSeq: number, quarantined: Quarantined[]) => Promise<void>;

export interface PipelineOptions {
  /** Most events (and quarantined messages) one commit takes. */
  batchSize: number;
  /**
   * `eager`: commit whatever is pending as soon as no commit is in flight (a live runner:
   * a quiet stream commits each event at once, a busy one makes big batches).
   * `full`: commit only full batches, and the rest on `flush` (a catch-up: fewer, bigger
   * transactions while the next batch is read and decoded).
   */
  mode: 'eager' | 'full';
  /** Items held (pending, not yet in a commit) from which the reader is asked to wait. */
  limit: number;
  /** Called once, at the first failed commit (stop reading: no next message may come to notice it). */
  onFailure?: (err: unknown) => void;
  /**
   * Eager mode only: at most one commit per this many ms while nobody is `urgent` — what
   * arrives meanwhile gathers into the next commit (group commit under a steady stream of
   * small batches: one transaction for many events instead of one for every few). A quiet
   * stream still commits at once: the wait counts from the start of the previous commit.
   * Unset or 0: never wait.
   */
  lingerMs?: number;
  /** True while someone waits for what is pending (then no lingering). */
  urgent?: () => boolean;
}

export class CommitPipeline<E> {
  private pending: Projected<E>[] = [];
  private quarantined: Quarantined[] = [];
  /** Position through the last message taken in. */
  private through: number;
  /** Position through which commits have been made (or were not needed). */
  private committedThrough: number;
  private committing?: Promise<void>;
  private flushing = false;
  private failedWith?: { error: unknown };
  /** performance.now() at the start of the last commit (lingering counts from there). */
  private lastCommitAt = -Infinity;
  private lingering?: NodeJS.Timeout;
  /** Set by idle(): what is pending commits now, lingering or not. */
  private closing = false;

  constructor(
    from: number,
    private readonly commit: CommitFn<E>,
    private readonly options: PipelineOptions,
  ) {
    this.through = from;
    this.committedThrough = from;
  }

  /** Position through the last message taken in: the next message to read is after it. */
  get last(): number {
    return this.through;
  }

  get failed(): boolean {
    return this.failedWith !== undefined;
  }

  get failure(): unknown {
    return this.failedWith?.error;
  }

  /**
   * Takes in one decoded message, `through` being the position that passes all of it (a
   * message taken in before is skipped: a shared reader may deliver it again). Events at or
   * before the start position are left out: a batch may have ended inside an envelope.
   */
  add(through: number, decoded: DecodedMessage<E>): void {
    if (through <= this.through || this.failedWith) return;
    const from = this.through;
    for (const p of decoded.events) if (p.seq > from) this.pending.push(p);
    if (decoded.quarantined) this.quarantined.push(decoded.quarantined);
    this.through = through;
    this.kick();
  }

  /** What the reader should wait for before reading on (the pipeline holds `limit` items), if anything. */
  get backpressure(): Promise<void> | undefined {
    return this.pending.length + this.quarantined.length >= this.options.limit ? this.committing : undefined;
  }

  /** Commits everything taken in; rejects with the failure of any commit. */
  async flush(): Promise<void> {
    this.flushing = true;
    this.kick();
    await this.idle();
    if (this.failedWith) throw this.failedWith.error;
  }

  /**
   * Resolves once no commit is in flight and an eager pipeline has committed all it took in
   * (it stops lingering for good: the reader is done with it).
   */
  async idle(): Promise<void> {
    this.closing = true;
    this.kick();
    while (this.committing) await this.committing;
  }

  /** Someone waits for what is pending: commit it now rather than after the linger. */
  hurry(): void {
    if (this.lingering) this.kick(true);
  }

  private ready(): boolean {
    if (this.failedWith || this.through <= this.committedThrough) return false;
    return this.options.mode === 'eager' || this.flushing || this.pending.length + this.quarantined.length >= this.options.batchSize;
  }

  private kick(now = false): void {
    if (this.committing || !this.ready()) return;
    if (!now && this.lingers()) {
      if (this.lingering) return;
      const wait = this.lastCommitAt + this.options.lingerMs! - performance.now();
      if (wait > 0) {
        this.lingering = setTimeout(() => {
          this.lingering = undefined;
          this.kick(true);
        }, wait);
        this.lingering.unref?.();
        return;
      }
    }
    if (this.lingering) {
      clearTimeout(this.lingering);
      this.lingering = undefined;
    }
    this.committing = this.drain()
      .catch((err: unknown) => {
        this.failedWith = { error: err };
        this.options.onFailure?.(err);
      })
      .finally(() => {
        this.committing = undefined;
        // What arrived while the last commit was finishing.
        this.kick();
      });
  }

  /** Whether the next commit may wait to gather more (eager, lingering set, not full, nobody waiting). */
  private lingers(): boolean {
    const { lingerMs, mode, batchSize, urgent } = this.options;
    if (!lingerMs || mode !== 'eager' || this.closing || this.flushing) return false;
    if (this.pending.length + this.quarantined.length >= batchSize) return false;
    return !urgent?.();
  }

  private async drain(): Promise<void> {
    const { batchSize } = this.options;
    // Full batches (a catch-up) and what someone waits for go one after another; the rest
    // waits in kick() for the linger to pass.
    do {
      this.lastCommitAt = performance.now();
      const take = this.pending.length > batchSize ? this.pending.splice(0, batchSize) : this.pending.splice(0);
      // A cut inside an envelope commits up to the last event taken; the rest follows.
      const last = this.pending.length > 0 ? take.at(-1)!.seq : this.through;
      let quarantine: Quarantined[] = [];
      if (this.quarantined.length > 0) {
        quarantine = this.quarantined.filter((q) => q.seq <= last);
        this.quarantined = this.quarantined.filter((q) => q.seq > last);
      }
      await this.commit(take, last, quarantine);
      this.committedThrough = last;
    } while (this.ready() && !this.lingers());
  }
}

/** How long a reader may run on queued messages before it lets I/O (Postgres answers) through. */
export const READ_SLICE_MS = 2;

/**
 * Messages already queued by the NATS client come out of `for await` as microtasks, so a
 * reader ahead of its commits never yields to I/O: the answer to the commit in flight waits
 * in its socket until the queue is empty, and Postgres idles meanwhile. Awaiting what this
 * returns after each message lets I/O through about every READ_SLICE_MS.
 */
export function readSlices(): () => Promise<void> | undefined {
  let since = performance.now();
  let count = 0;
  return () => {
    // The clock is read every 16th message only: a message takes microseconds.
    if ((++count & 15) !== 0) return undefined;
    const now = performance.now();
    if (now - since < READ_SLICE_MS) return undefined;
    return nextMacrotask().then(() => {
      since = performance.now();
    });
  };
}

/** A message arriving this long after the previous one is handled a macrotask later (afterQuiet). */
export const QUIET_MS = 0.25;

/**
 * A live stream's message often arrives in the same socket read as the ack of the append
 * that wrote it, and is queued ahead of it: handled at once, the projections' folding would
 * run before the command that waits for the ack answers its client. Awaiting what this
 * returns before each message defers the first message after a quiet spell by one
 * macrotask, so the answers go out first; messages that follow close on each other (a busy
 * stream, a catch-up read) are not deferred.
 */
export function afterQuiet(): () => Promise<void> | undefined {
  let last = 0;
  return () => {
    const now = performance.now();
    const quiet = now - last > QUIET_MS;
    last = now;
    if (!quiet) return undefined;
    return nextMacrotask().then(() => {
      last = performance.now();
    });
  };
}
