// The room-subject event log on JetStream: append with the expected last subject
// sequence (single writer per room, by optimistic concurrency) and read a room's history.
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { messageId } from '../events/streams.ts';
import { AckedPublisher } from './appendAcks.ts';
import type { Naming, StreamKind } from '../events/subjects.ts';
import { ConcurrencyError, isTransient, isWrongLastSequence, ServiceUnavailableError } from './errors.ts';
import type { Logger } from '../logger.ts';
import { appendConflictsTotal, appendDurationSeconds } from '../metrics.ts';

export interface LogRecord {
  seq: number;
  data: Uint8Array;
}

export interface AppendResult {
  /** Stream sequence of the appended envelope (of the earlier one, for a duplicate). */
  seq: number;
  /** True when JetStream recognised the message ID as a retry of an earlier append. */
  duplicate: boolean;
}

export class EventLog {
  /** How long a consumer read may go without a message before it falls back to direct gets. */
  readStallMs = 3_000;

  private constructor(
    readonly naming: Naming,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly acks: AckedPublisher,
    private readonly logger?: Logger,
  ) {}

  /**
   * `logger`: a debug line per append (with the command ID, which carries the request's).
   * `ackTimeoutMs`: how long an append waits for JetStream's acknowledgement (default APPEND_ACK_TIMEOUT_MS).
   * `apiTimeoutMs`: how long a read (direct get, consumer creation) waits for JetStream (the client's default, 5 s).
   */
  static async open(nc: NatsConnection, naming: Naming, logger?: Logger, options: { ackTimeoutMs?: number; apiTimeoutMs?: number } = {}): Promise<EventLog> {
    const api = options.apiTimeoutMs === undefined ? {} : { timeout: options.apiTimeoutMs };
    return new EventLog(naming, jetstream(nc, api), await jetstreamManager(nc, api), new AckedPublisher(nc, options.ackTimeoutMs), logger);
  }

  /**
   * Appends one envelope (a whole decision) to the room's subject, expecting `expectedSeq`
   * as the subject's last sequence (0: the subject is empty). Throws ConcurrencyError when
   * another writer got there first. The message ID is the command's: a retried command,
   * whatever it decides the second time, is stored once; the answer then names the
   * earlier envelope (`duplicate`), which the caller reads back with `get`.
   */
  async append(kind: StreamKind, roomId: string, envelope: Uint8Array, expectedSeq: number, commandId: string): Promise<AppendResult> {
    const subject = this.naming.roomSubject(kind, roomId);
    const started = performance.now();
    try {
      const ack = await this.acks.publish(subject, envelope, messageId(kind, commandId), expectedSeq);
      const seconds = (performance.now() - started) / 1000;
      appendDurationSeconds.observe({ stream: kind }, seconds);
      if (this.logger?.isLevelEnabled('debug')) {
        this.logger.debug({ req_id: commandId, subject, seq: ack.seq, duplicate: ack.duplicate, ms: Math.round(seconds * 1000) }, 'appended');
      }
      return { seq: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      if (isWrongLastSequence(err)) {
        appendConflictsTotal.inc({ stream: kind });
        this.logger?.debug({ req_id: commandId, subject, expectedSeq }, 'append conflict: another writer appended first');
        throw new ConcurrencyError(subject, expectedSeq, { cause: err });
      }
      throw err;
    }
  }

  /** The message at stream sequence `seq`, or null when there is none. */
  async get(kind: StreamKind, seq: number): Promise<LogRecord | null> {
    if (!Number.isInteger(seq) || seq < 1) return null;
    const msg = await this.jsm.direct.getMessage(this.naming.streamName(kind), { seq });
    return msg ? { seq: msg.seq, data: msg.data } : null;
  }

  /** Stream sequence of the last message on the room's subject, 0 when it has none. */
  async lastSeq(kind: StreamKind, roomId: string): Promise<number> {
    const msg = await this.jsm.direct.getMessage(this.naming.streamName(kind), {
      last_by_subj: this.naming.roomSubject(kind, roomId),
    });
    return msg ? msg.seq : 0;
  }

  /** Every message on the room's subject with sequence ≥ fromSeq, in order. */
  async read(kind: StreamKind, roomId: string, fromSeq = 1): Promise<LogRecord[]> {
    const last = await this.lastSeq(kind, roomId);
    if (last === 0 || last < fromSeq) return [];
    return this.readFiltered(kind, this.naming.roomSubject(kind, roomId), fromSeq, last);
  }

  /**
   * Messages matching `filter` from `fromSeq` up to and including `untilSeq`: through an
   * ordered consumer, or, when that cannot be had or stalls (a consumer placed on a NATS
   * node that just died), message by message through direct gets, which any replica serves.
   */
  async readFiltered(kind: StreamKind, filter: string, fromSeq: number, untilSeq: number): Promise<LogRecord[]> {
    try {
      return await this.readWithConsumer(kind, filter, fromSeq, untilSeq);
    } catch (err) {
      if (!isTransient(err)) throw err;
      return this.readWithDirectGets(kind, filter, fromSeq, untilSeq);
    }
  }

  private async readWithConsumer(kind: StreamKind, filter: string, fromSeq: number, untilSeq: number): Promise<LogRecord[]> {
    const consumer = await this.js.consumers.get(this.naming.streamName(kind), {
      filter_subjects: filter,
      deliver_policy: fromSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
      ...(fromSeq > 1 ? { opt_start_seq: fromSeq } : {}),
    });
    const out: LogRecord[] = [];
    const messages = await consumer.consume({ max_messages: 1024, expires: 2_000 });
    // Bounded: a read that stops making progress gives up (the caller falls back).
    let stalled = false;
    const timer = setTimeout(() => {
      stalled = true;
      void messages.close();
    }, this.readStallMs);
    try {
      for await (const m of messages) {
        timer.refresh();
        if (m.seq > untilSeq) break;
        out.push({ seq: m.seq, data: m.data });
        if (m.seq === untilSeq || m.info.pending === 0) break;
      }
    } finally {
      clearTimeout(timer);
      await messages.close();
      // The server keeps a closed ordered consumer for five minutes: a host that takes over
      // a thousand rooms would leave two thousand behind. Delete it now (in the background).
      void consumer.delete().catch(() => undefined);
    }
    if (stalled && out.at(-1)?.seq !== untilSeq) throw new ServiceUnavailableError(`reading ${filter} stalled at ${out.at(-1)?.seq ?? fromSeq - 1} of ${untilSeq}`);
    return out;
  }

  private async readWithDirectGets(kind: StreamKind, subject: string, fromSeq: number, untilSeq: number): Promise<LogRecord[]> {
    const out: LogRecord[] = [];
    for (let seq = Math.max(1, fromSeq); seq <= untilSeq;) {
      const msg = await this.jsm.direct.getMessage(this.naming.streamName(kind), { seq, next_by_subj: subject });
      if (!msg || msg.seq > untilSeq) break;
      out.push({ seq: msg.seq, data: msg.data });
      seq = msg.seq + 1;
    }
    return out;
  }
}
