// JetStream publishes with acknowledgement, for the event log's appends, on one reply
// subscription of our own. The client's `js.publish` goes through its generic request path:
// a request object, a timer and a deferred per publish, and on every answer a "cancelled"
// RequestError (with its stack) for a promise already settled — 4 % of a busy process's
// CPU by itself. Here a publish is one map entry and one message; one sweep per second
// fails the appends that got no answer. What JetStream answers is read exactly as the
// client reads it: an API error becomes the same JetStreamApiError (so a stale writer is
// still error 10071), and "no responders" (no stream for the subject, or none with a
// leader) a retryable ServiceUnavailableError.
import { JetStreamApiError } from '@nats-io/jetstream';
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { ServiceUnavailableError } from './errors.ts';

export interface PubAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

/** How long an append waits for JetStream's answer (the client's default for js.publish). */
export const APPEND_ACK_TIMEOUT_MS = 5_000;

interface Pending {
  resolve(ack: PubAck): void;
  reject(err: unknown): void;
  deadline: number;
}

/**
 * An append's two headers, already in their wire form. The client's publish reads a header
 * object only through `encode()`; its own MsgHdrs keeps a map of arrays, searches its keys on
 * every `set` and builds the string and bytes on `encode`: 2.7–3.0 µs per append against
 * 1.1–1.5 here, and a twentieth of the bytes a command allocated in the many-rooms bench
 * (a sampling heap profile, 2026-12-07). These are the bytes MsgHdrs encodes for the same two headers
 * (test/unit/appendHeaders.test.ts holds the two side by side), and, as MsgHdrs does, a value
 * with a line break is refused and a value's outer blanks trimmed.
 */
export function appendHeaders(msgId: string, expectedLastSubjectSeq: number): MsgHdrs {
  if (/[\r\n]/.test(msgId)) throw new TypeError('a message ID cannot contain \\r or \\n');
  const bytes = Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId.trim()}\r\nNats-Expected-Last-Subject-Sequence: ${expectedLastSubjectSeq}\r\n\r\n`, 'utf8');
  return { encode: () => bytes } as unknown as MsgHdrs;
}

export class AckedPublisher {
  private readonly prefix = createInbox();
  private next = 0;
  /** In publish order: every entry has the same timeout, so the oldest expires first. */
  private readonly pending = new Map<number, Pending>();
  private sub?: Subscription;
  private sweeper?: NodeJS.Timeout;
  /** When the sweeper last ran (performance.now()). */
  private lastSweep = 0;
  private readonly sweepMs: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = APPEND_ACK_TIMEOUT_MS,
  ) {
    this.sweepMs = Math.min(1_000, timeoutMs);
    // A closed connection answers nothing more: fail what waits now, not after the timeout.
    void nc.closed().then(() => this.failAll('the NATS connection closed before JetStream acknowledged the append'));
  }

  private failAll(why: string): void {
    for (const waiting of this.pending.values()) waiting.reject(new ServiceUnavailableError(why));
    this.pending.clear();
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /**
   * Publishes `data` to `subject` with a message ID (JetStream's duplicate window) and the
   * subject's expected last sequence; resolves with JetStream's acknowledgement.
   */
  publish(subject: string, data: Uint8Array, msgId: string, expectedLastSubjectSeq: number): Promise<PubAck> {
    return new Promise<PubAck>((resolve, reject) => {
      const id = ++this.next;
      try {
        if (!this.sub || this.sub.isClosed()) this.sub = this.nc.subscribe(`${this.prefix}.*`, { callback: (_err, msg) => this.onAnswer(msg) });
        const h = appendHeaders(msgId, expectedLastSubjectSeq);
        this.pending.set(id, { resolve, reject, deadline: performance.now() + this.timeoutMs });
        if (!this.sweeper) {
          this.lastSweep = performance.now();
          this.sweeper = setInterval(() => this.sweep(), this.sweepMs).unref();
        }
        this.nc.publish(subject, data, { reply: `${this.prefix}.${id}`, headers: h });
      } catch (err) {
        // A closed or draining connection refuses at once.
        this.pending.delete(id);
        reject(err);
      }
    });
  }

  private onAnswer(msg: Msg | undefined): void {
    if (!msg) return;
    const id = Number(msg.subject.slice(this.prefix.length + 1));
    const waiting = this.pending.get(id);
    if (!waiting) return; // already timed out
    this.pending.delete(id);
    if (msg.headers?.hasError) {
      waiting.reject(new ServiceUnavailableError(`JetStream took no append (${msg.headers.code} ${msg.headers.description || 'no responders'}): no stream leader for the subject`));
      return;
    }
    let answer: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; err_code: number; description: string } };
    try {
      answer = msg.json();
    } catch {
      waiting.reject(new Error('JetStream answered an append with something other than JSON'));
      return;
    }
    if (answer.error) waiting.reject(new JetStreamApiError(answer.error));
    else if (!answer.stream || typeof answer.seq !== 'number') waiting.reject(new Error('invalid ack response'));
    else waiting.resolve({ stream: answer.stream, seq: answer.seq, duplicate: answer.duplicate === true });
  }

  /**
   * Timers run before the event loop reads its sockets: after the loop was held up (a long
   * synchronous task, a GC pause), the answers may be waiting unread while the deadlines have
   * passed. The time the loop was held is not JetStream's: deadlines move on by it — and by
   * at least one more sweep period from now, since JetStream (on the same cores) may have
   * been held up as well — and the expiry runs after this turn's reads (setImmediate), so
   * what has arrived counts.
   */
  private sweep(): void {
    const now = performance.now();
    const late = now - this.lastSweep - this.sweepMs;
    this.lastSweep = now;
    if (late > this.sweepMs) for (const waiting of this.pending.values()) waiting.deadline = Math.max(waiting.deadline + late, now + this.sweepMs);
    setImmediate(() => this.expire());
  }

  private expire(): void {
    const now = performance.now();
    for (const [id, waiting] of this.pending) {
      if (waiting.deadline > now) break;
      this.pending.delete(id);
      // "timeout" in the message: a transient fault (errors.ts), the outcome unknown.
      waiting.reject(new ServiceUnavailableError(`JetStream did not acknowledge the append within ${this.timeoutMs} ms (timeout)`));
    }
    if (this.pending.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
