// One read of a stream for every projection runner of a process that reads it: the runners
// of PEEKS (sync_peeks, federation_peeks, audit, federation_outbox) would otherwise each
// fetch every message from JetStream and each decode it. A feed fetches and decodes each
// message once and hands the same decoded events to every runner that has joined it; each
// runner still commits on its own (its own checkpoint, transactions and retries).
//
// A runner joins only where it would miss nothing: when the feed is not past the runner's
// position, or, as runners start together, a little past it (the feed then reads again from
// that position and the others skip what they already have). Otherwise the runner reads on
// its own until it has caught up with the feed. A runner whose commit fails leaves, and reads
// on its own after its retry delay until it has caught up again; one that holds the others
// back for longer than STALL_MS (its commits are slow) is let go likewise, so one slow or
// failing projection never holds the others for long.
import { DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { seqOfPosition, throughSeq } from '../events/envelope.ts';
import type { Naming, StreamKind } from '../events/subjects.ts';
import { afterQuiet, readSlices } from './pipeline.ts';
import { decodeMessage, type DecodedMessage, type Decoder } from './projection.ts';

/** Longest a member may hold the feed back (waiting for its commits) before it is let go. */
export const STALL_MS = 1_000;
/** A starting runner at most this many messages behind the feed makes it read again from there. */
export const REWIND_MAX_MESSAGES = 2_000;

/**
 * Reads `stream` from after `after` (a position) with an ordered consumer. Short pulls with
 * heartbeats: a consumer lost with a NATS node is noticed and made again within seconds.
 */
export async function openStream(js: JetStreamClient, naming: Naming, stream: StreamKind, after: number, batchSize: number): Promise<ConsumerMessages> {
  // The envelope holding the first event not yet read (a batch may end inside one).
  const start = seqOfPosition(after + 1);
  const consumer = await js.consumers.get(naming.streamName(stream), {
    filter_subjects: naming.allSubjects(stream),
    deliver_policy: start > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
    ...(start > 1 ? { opt_start_seq: start } : {}),
  });
  return consumer.consume({ max_messages: batchSize * 2, expires: 2_000 });
}

/** A read that delivered nothing this long while its stream has more is made again. */
export const READ_STALL_MS = 5_000;

/**
 * Watches a read from openStream: when it has delivered nothing for READ_STALL_MS, is not
 * held back by its reader (`busy`), and the stream holds messages past `position()`, it is
 * closed, so that the reader's loop opens a new one from where it got to. The ordered
 * consumer recreates itself after a lost server, but a reset that keeps failing while the
 * stream's leader moves can leave it waiting for good: this bounds that to seconds.
 * Returns the function that stops watching.
 */
export function watchRead(nc: NatsConnection, naming: Naming, stream: StreamKind, messages: ConsumerMessages, position: () => number, busy: () => boolean): () => void {
  let seen = position();
  let checking = false;
  const timer = setInterval(() => {
    const now = position();
    if (now !== seen || busy() || checking) {
      seen = now;
      return;
    }
    checking = true;
    void jetstreamManager(nc)
      .then((jsm) => jsm.streams.info(naming.streamName(stream)))
      .then((info) => {
        if (position() === seen && !busy() && info.state.last_seq > seqOfPosition(seen)) void messages.close().catch(() => undefined);
      })
      .catch(() => undefined) // NATS unreachable: the read fails by itself
      .finally(() => (checking = false));
  }, READ_STALL_MS);
  timer.unref?.();
  return () => clearInterval(timer);
}

/** Why a membership ended. */
export type FeedEnd = { reason: 'left' } | { reason: 'stalled' } | { reason: 'failed'; error: unknown };

export interface FeedMember<E> {
  /**
   * Takes one decoded message (shared with the other members: read it, never change it),
   * `through` being the position past all of it. Returns what to wait for before the feed
   * reads on, if the member holds as much as it may.
   */
  offer(through: number, decoded: DecodedMessage<E>): Promise<void> | undefined;
}

export interface FeedMembership {
  /** Resolves when the membership ends: left, let go for stalling, or the feed's read failed. */
  readonly ended: Promise<FeedEnd>;
  leave(): void;
}

interface Member {
  member: FeedMember<unknown>;
  end(how: FeedEnd): void;
}

export class SharedFeed<E> {
  private readonly members = new Set<Member>();
  /** Position through the last message delivered (where a joiner misses nothing). */
  private last = 0;
  private running = false;
  /** A joiner asked for an earlier start: the current read ends and the feed reads again from `last`. */
  private restart = false;
  private messages?: ConsumerMessages;
  private readonly js: JetStreamClient;

  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    private readonly decoder: Decoder<E>,
    private readonly batchSize: number,
  ) {
    this.js = jetstream(nc);
  }

  /** Whether the feed has a read open, or is still closing one after its last member left. */
  get reading(): boolean {
    return this.running;
  }

  /**
   * Would a member at `position` miss nothing by joining now? With `rewind`, also when the
   * feed is a short re-read past it.
   */
  canJoinAt(position: number, rewind = false): boolean {
    if (!this.running || position >= this.last) return true;
    return rewind && seqOfPosition(this.last) - seqOfPosition(position) <= REWIND_MAX_MESSAGES;
  }

  /** Joins `member`, whose next message is the one after `position`; undefined if it would miss some. */
  join(position: number, member: FeedMember<E>, rewind = false): FeedMembership | undefined {
    if (!this.canJoinAt(position, rewind)) return undefined;
    if (!this.running || position < this.last) {
      // Start (again) from here; the members already in skip what they have.
      this.last = position;
      if (this.running) {
        this.restart = true;
        void this.messages?.close().catch(() => undefined);
      }
    }
    let end!: (how: FeedEnd) => void;
    const ended = new Promise<FeedEnd>((resolve) => (end = resolve));
    const entry: Member = {
      member: member as FeedMember<unknown>,
      end: (how) => {
        if (this.members.delete(entry)) end(how);
      },
    };
    this.members.add(entry);
    if (!this.running) {
      this.running = true;
      void this.loop();
    }
    return {
      ended,
      leave: () => {
        entry.end({ reason: 'left' });
        // The last one out stops the read now (a quiet stream would not end it).
        if (this.members.size === 0) void this.messages?.close().catch(() => undefined);
      },
    };
  }

  private async loop(): Promise<void> {
    for (;;) {
      // No await between this check and the return: a join either sees the feed running or starts it.
      if (this.members.size === 0) {
        this.running = false;
        this.messages = undefined;
        return;
      }
      this.restart = false;
      let messages: ConsumerMessages | undefined;
      let stopWatching: (() => void) | undefined;
      try {
        messages = await openStream(this.js, this.naming, this.decoder.stream, this.last, this.batchSize);
        this.messages = messages;
        // Asked to read again, or left by all, while the read was being opened: close it, and
        // still iterate it below (the first check breaks; with nothing queued the loop ends at
        // once). nats.js settles close() only when an iterator takes the stop it queues: a read
        // closed but never iterated never settles, and awaiting it would hang the feed.
        if (this.restart || this.members.size === 0) void messages.close().catch(() => undefined);
        const nextSlice = readSlices();
        const quietWait = afterQuiet();
        let delivering = false;
        stopWatching = watchRead(
          this.nc,
          this.naming,
          this.decoder.stream,
          messages,
          () => this.last,
          () => delivering,
        );
        for await (const m of messages) {
          // Checked before each message: a closed read still yields what it had queued, and
          // delivering that after a restart was asked for would carry a joiner past a gap.
          if (this.restart || this.members.size === 0) break;
          const through = throughSeq(m.seq);
          if (through <= this.last) continue;
          const quiet = quietWait();
          if (quiet) {
            await quiet;
            if (this.restart || this.members.size === 0) break;
          }
          const decoded = decodeMessage(this.decoder, this.naming, m);
          this.last = through;
          delivering = true;
          await this.deliver(through, decoded);
          const slice = nextSlice();
          if (slice) await slice;
          delivering = false;
        }
      } catch (err) {
        // The read failed (NATS gone, the stream deleted): every member fails and retries.
        for (const m of [...this.members]) m.end({ reason: 'failed', error: err });
      } finally {
        stopWatching?.();
        stopWatching = undefined;
        await messages?.close().catch(() => undefined);
      }
    }
  }

  private async deliver(through: number, decoded: DecodedMessage<E>): Promise<void> {
    let waits: [Member, Promise<void>][] | undefined;
    for (const m of this.members) {
      const wait = m.member.offer(through, decoded);
      if (wait) (waits ??= []).push([m, wait]);
    }
    if (!waits) return;
    for (const [m, wait] of waits) {
      if (!this.members.has(m)) continue;
      // Alone, a member holds back no one: the feed waits for it as a reader of its own would.
      if (this.members.size === 1) await wait;
      else if (await stalls(wait, STALL_MS)) m.end({ reason: 'stalled' });
    }
  }
}

/** Whether `wait` is still pending after `ms`. */
async function stalls(wait: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms)));
  try {
    return await Promise.race([wait.then(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Feeds per connection and stream: one per (naming, stream, decode function). */
const feeds = new WeakMap<NatsConnection, Map<string, Map<Decoder<unknown>['decode'], SharedFeed<unknown>>>>();

/** The process's feed of `decoder.stream` on `nc` for projections that decode with `decoder.decode`. */
export function sharedFeed<E>(nc: NatsConnection, naming: Naming, decoder: Decoder<E>, batchSize: number): SharedFeed<E> {
  let byName = feeds.get(nc);
  if (!byName) feeds.set(nc, (byName = new Map()));
  const key = `${naming.streamName(decoder.stream)}\u0000${naming.allSubjects(decoder.stream)}\u0000${naming.shards}`;
  let byDecode = byName.get(key);
  if (!byDecode) byName.set(key, (byDecode = new Map()));
  let feed = byDecode.get(decoder.decode as Decoder<unknown>['decode']);
  if (!feed) {
    feed = new SharedFeed<unknown>(nc, naming, { stream: decoder.stream, decode: decoder.decode as Decoder<unknown>['decode'] }, batchSize);
    byDecode.set(decoder.decode as Decoder<unknown>['decode'], feed);
  }
  return feed as SharedFeed<E>;
}
