// The federation sender: per destination, one ordered queue. It sends every PDU of a room
// a peer peeks, after the snapshot's ROOMS sequence and none before it, each once; our
// expiries of its peeks as `expired_peeks`; and DELETEs for our own outbound peeks that
// ended. One transaction is in flight per destination and it is stored before it is
// sent, so a restart re-sends it with the same ID (the peer dedupes) — nothing is lost
// or repeated. A peer that is down is retried with backoff.
import { boundedLabel, federationFailuresTotal, federationRetriesTotal } from '../metrics.ts';
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { and, asc, eq, inArray, min, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Pdu } from '../events/roomEvents.ts';
import { rowsOf, type Db } from '../store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutbox, federationsenderPendingTxns, federationsenderRoomCursors } from '../store/schema.ts';
import { FederationUnreachableError, type FederationClient } from './client.ts';

const MAX_PDUS_PER_TXN = 50;
const MAX_EDU_ITEMS_PER_TXN = 100;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;
/** How long a room whose peeks ended keeps its cursor, waiting for the event that ended them. */
const GONE_GRACE_MS = 10_000;
/**
 * Rooms per destination whose grace period is tracked; past it the least recently seen go,
 * and start their grace again when next seen (their cursors stay meanwhile: nothing is sent
 * early or lost). An entry lives one grace period and a build or two, so only a destination
 * with more rooms than this in grace at once (ten times the default cap on its live peeks,
 * PEEKD_MAX_INBOUND_PEEKS_PER_SERVER) would see cursors outlive their grace.
 */
const MAX_GONE_ROOMS = 100_000;

interface EventRow {
  seq: string | number;
  room_id: string;
  type: string;
  state_key: string | null;
  pdu: Pdu;
}

/** An event after which the room may no longer be peeked. */
function endsPeeking(e: { type: string; state_key: string | null; pdu: Pdu }): boolean {
  if (e.state_key !== '') return false;
  if (e.type === 'm.room.history_visibility') return e.pdu.content?.history_visibility !== 'world_readable';
  if (e.type === 'm.room.encryption') return typeof e.pdu.content?.algorithm === 'string';
  return false;
}

/** Whether the room could be peeked as of ROOMS sequence `seq` (its state then). */
async function peekableAt(tx: Pick<Db, 'execute'>, roomId: string, seq: number): Promise<boolean> {
  const rows = rowsOf<{ type: string; state_key: string | null; pdu: Pdu }>(
    await tx.execute(sql`
      select distinct on (type) type, state_key, pdu
      from syncapi_room_events
      where room_id = ${roomId} and state_key = '' and type in ('m.room.history_visibility', 'm.room.encryption') and seq <= ${seq}
      order by type, seq desc`),
  );
  const visibility = rows.find((r) => r.type === 'm.room.history_visibility');
  if (!visibility || visibility.pdu.content?.history_visibility !== 'world_readable') return false;
  return !rows.some((r) => r.type === 'm.room.encryption' && endsPeeking(r));
}

/** ROOMS sequence of the first event after `seq` that ends peeking, if any. */
async function firstEndingAfter(tx: Pick<Db, 'execute'>, roomId: string, seq: number): Promise<number | undefined> {
  const rows = rowsOf<{ seq: string | number; type: string; state_key: string | null; pdu: Pdu }>(
    await tx.execute(sql`
      select seq, type, state_key, pdu
      from syncapi_room_events
      where room_id = ${roomId} and state_key = '' and type in ('m.room.history_visibility', 'm.room.encryption') and seq > ${seq}
      order by seq`),
  );
  const first = rows.find(endsPeeking);
  return first ? Number(first.seq) : undefined;
}

interface PendingTxn {
  txnId: string;
  body: Record<string, unknown>;
  cursors: Record<string, number>;
  outboxSeqs: number[];
}

export class FederationSender {
  private readonly queues = new Map<string, DestinationQueue>();
  /** Until start(): a process that does not hold the sender job never sends. */
  private stopped = true;

  constructor(
    private readonly db: Db,
    private readonly client: FederationClient,
    private readonly serverName: string,
    private readonly now: () => number,
    private readonly logger?: Logger,
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.discover();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.queues.values()].map((q) => q.stop()));
    this.queues.clear();
  }

  /**
   * Something may be due: wake the queues (new PDUs), and with `discover` first look for
   * destinations that have work but no queue yet (a new peek, an outbox entry).
   */
  async wake(discover = false): Promise<void> {
    if (this.stopped) return;
    if (discover) await this.discover();
    for (const q of this.queues.values()) q.wake();
  }

  private async discover(): Promise<void> {
    const peers = await this.db.selectDistinct({ d: federationsenderInboundPeeks.serverName }).from(federationsenderInboundPeeks);
    const outbox = await this.db.selectDistinct({ d: federationsenderOutbox.destination }).from(federationsenderOutbox);
    const pending = await this.db.select({ d: federationsenderPendingTxns.destination }).from(federationsenderPendingTxns);
    // A cursor without a live peek may still have the event that ended the peek to relay.
    const cursors = await this.db.selectDistinct({ d: federationsenderRoomCursors.destination }).from(federationsenderRoomCursors);
    for (const { d } of [...peers, ...outbox, ...pending, ...cursors]) {
      if (this.stopped || this.queues.has(d)) continue;
      const q = new DestinationQueue(d, this.db, this.client, this.serverName, this.now, this.logger);
      this.queues.set(d, q);
      q.start();
    }
  }
}

class DestinationQueue {
  private stopped = false;
  private wakeUp?: () => void;
  private loop?: Promise<void>;
  private backoffMs = 0;
  /** Set by wake(): work may have arrived since the last look. */
  private dirty = true;
  /** Aborts the request in flight when the queue stops. */
  private readonly abort = new AbortController();
  /**
   * Rooms whose peeks by this destination all ended, and since when we have seen that.
   * Bounded by count through maxSize (each entry size 1) rather than max, which would
   * allocate room for all MAX_GONE_ROOMS entries up front in every destination's queue.
   */
  private readonly goneSince = new LRUCache<string, number>({ maxSize: MAX_GONE_ROOMS, sizeCalculation: () => 1 });

  constructor(
    readonly destination: string,
    private readonly db: Db,
    private readonly client: FederationClient,
    private readonly serverName: string,
    private readonly now: () => number,
    private readonly logger?: Logger,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.wakeUp?.();
    await this.loop;
  }

  wake(): void {
    this.dirty = true;
    if (this.backoffMs === 0) this.wakeUp?.();
  }

  private sleep(ms: number): Promise<void> {
    // stop() may have run while the loop was busy (its wakeUp then ended an older sleep).
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.wakeUp === done) this.wakeUp = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  private request(method: string, path: string, body?: unknown) {
    return this.client.request(this.destination, method, path, body, 30_000, this.abort.signal);
  }

  private async run(): Promise<void> {
    const destination = boundedLabel('destination', this.destination);
    while (!this.stopped) {
      try {
        if (this.backoffMs > 0) federationRetriesTotal.inc({ destination });
        this.dirty = false;
        const worked = (await this.sendDeletes()) | (await this.sendTransaction());
        this.backoffMs = 0;
        if (!worked && !this.dirty) await this.sleep(30_000);
      } catch (err) {
        if (this.stopped) break;
        federationFailuresTotal.inc({ destination });
        this.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, this.backoffMs * 2));
        this.logger?.warn({ destination: this.destination, err: (err as Error).message, retryInMs: this.backoffMs }, 'federation delivery failed');
        await this.sleep(this.backoffMs);
      }
    }
  }

  /** DELETEs for our outbound peeks the host still holds; 200 or 404 both settle them. */
  private async sendDeletes(): Promise<number> {
    const rows = await this.db
      .select()
      .from(federationsenderOutbox)
      .where(and(eq(federationsenderOutbox.destination, this.destination), eq(federationsenderOutbox.kind, 'delete_peek')))
      .orderBy(asc(federationsenderOutbox.seq))
      .limit(MAX_EDU_ITEMS_PER_TXN);
    for (const row of rows) {
      const path = `/_matrix/federation/v1/peek/${encodeURIComponent(row.roomId)}/${encodeURIComponent(row.peekId)}`;
      const res = await this.request('DELETE', path);
      if (res.status !== 200 && res.status !== 404) throw new FederationUnreachableError(`DELETE ${path} answered ${res.status}`);
      await this.db.delete(federationsenderOutbox).where(eq(federationsenderOutbox.seq, row.seq));
    }
    return rows.length > 0 ? 1 : 0;
  }

  /** Sends the pending transaction, or builds the next one; 1 when there was something. */
  private async sendTransaction(): Promise<number> {
    const txn = (await this.pending()) ?? (await this.build());
    if (!txn) return 0;
    const res = await this.request('PUT', `/_matrix/federation/v1/send/${encodeURIComponent(txn.txnId)}`, txn.body);
    if (res.status !== 200) throw new FederationUnreachableError(`send ${txn.txnId} answered ${res.status}`);
    await this.db.transaction(async (tx) => {
      for (const [roomId, seq] of Object.entries(txn.cursors)) {
        await tx
          .update(federationsenderRoomCursors)
          .set({ sentSeq: seq })
          .where(and(eq(federationsenderRoomCursors.destination, this.destination), eq(federationsenderRoomCursors.roomId, roomId), sql`${federationsenderRoomCursors.sentSeq} < ${seq}`));
      }
      if (txn.outboxSeqs.length > 0) await tx.delete(federationsenderOutbox).where(inArray(federationsenderOutbox.seq, txn.outboxSeqs));
      await tx.delete(federationsenderPendingTxns).where(eq(federationsenderPendingTxns.destination, this.destination));
    });
    return 1;
  }

  private async pending(): Promise<PendingTxn | null> {
    const [row] = await this.db.select().from(federationsenderPendingTxns).where(eq(federationsenderPendingTxns.destination, this.destination));
    if (!row) return null;
    return { txnId: row.txnId, body: row.body as Record<string, unknown>, cursors: row.cursors as Record<string, number>, outboxSeqs: row.outboxSeqs as number[] };
  }

  private async build(): Promise<PendingTxn | null> {
    const dest = this.destination;
    const peeks = federationsenderInboundPeeks;
    const cursors = federationsenderRoomCursors;
    return this.db.transaction(async (tx) => {
      // Cursors follow the live peeks: a new peek starts at its snapshot's sequence.
      const live = await tx
        .select({ roomId: peeks.roomId, from: min(peeks.roomSeq) })
        .from(peeks)
        .where(eq(peeks.serverName, dest))
        .groupBy(peeks.roomId);
      const have = await tx.select().from(cursors).where(eq(cursors.destination, dest));
      const liveFrom = new Map(live.map((l) => [l.roomId, Number(l.from ?? 0)]));
      const haveIds = new Set(have.map((h) => h.roomId));
      const fresh = live.filter((l) => !haveIds.has(l.roomId)).map((l) => ({ destination: dest, roomId: l.roomId, sentSeq: Number(l.from ?? 0) }));
      if (fresh.length > 0) await tx.insert(cursors).values(fresh).onConflictDoNothing();

      // Per room, what may go: the events after the cursor while the room stays peekable
      // (world_readable, not encrypted), up to and including the event that ends that —
      // peekers are sent the event that ends their peek, and nothing after it. A room whose
      // peeks all ended keeps its cursor only to relay such an ending event.
      const candidates: EventRow[] = [];
      const drop: string[] = [];
      const rooms = [...fresh.map((f) => ({ roomId: f.roomId, sentSeq: f.sentSeq })), ...have.map((h) => ({ roomId: h.roomId, sentSeq: Number(h.sentSeq) }))];
      // Rooms with nothing after their cursor need no closer look (the common case).
      const busy = new Set(
        rowsOf<{ room_id: string }>(
          await tx.execute(sql`
            select c.room_id from federationsender_room_cursors c
            where c.destination = ${dest}
              and exists (select 1 from syncapi_room_events e where e.room_id = c.room_id and e.seq > c.sent_seq)`),
        ).map((r) => r.room_id),
      );
      const now = this.now();
      // The peeks table and the room events are two projections: the event that ended a
      // peek may be projected a moment after the peek's end is. A room whose peeks ended
      // keeps its cursor for a grace period while no such event has shown up.
      const dropGone = (roomId: string, ended: boolean) => {
        const since = this.goneSince.get(roomId) ?? now;
        this.goneSince.set(roomId, since);
        if (ended || now - since >= GONE_GRACE_MS) {
          drop.push(roomId);
          this.goneSince.delete(roomId);
        }
      };
      for (const { roomId, sentSeq } of rooms) {
        const isLive = liveFrom.has(roomId);
        if (isLive) this.goneSince.delete(roomId);
        if (!busy.has(roomId)) {
          if (!isLive) dropGone(roomId, false);
          continue;
        }
        // A cursor left behind by an ended peek never reaches below a newer peek's snapshot.
        const from = isLive ? Math.max(sentSeq, liveFrom.get(roomId)!) : sentSeq;
        if (!(await peekableAt(tx, roomId, from))) {
          // The ending event went out already: nothing more for this room.
          if (!isLive) dropGone(roomId, true);
          continue;
        }
        let upto: number | undefined;
        if (!isLive) {
          upto = await firstEndingAfter(tx, roomId, from);
          if (upto === undefined) {
            dropGone(roomId, false);
            continue;
          }
        }
        const rows = rowsOf<EventRow>(
          await tx.execute(sql`
            select seq, room_id, type, state_key, pdu
            from syncapi_room_events
            where room_id = ${roomId} and seq > ${from} ${upto !== undefined ? sql`and seq <= ${upto}` : sql``}
            order by seq
            limit ${MAX_PDUS_PER_TXN}`),
        );
        for (const row of rows) {
          candidates.push(row);
          if (endsPeeking(row)) break;
        }
      }
      if (drop.length > 0) await tx.delete(cursors).where(and(eq(cursors.destination, dest), inArray(cursors.roomId, drop)));
      const events = candidates.sort((a, b) => Number(a.seq) - Number(b.seq)).slice(0, MAX_PDUS_PER_TXN);
      const expired = await tx
        .select()
        .from(federationsenderOutbox)
        .where(and(eq(federationsenderOutbox.destination, dest), eq(federationsenderOutbox.kind, 'expired_peek')))
        .orderBy(asc(federationsenderOutbox.seq))
        .limit(MAX_EDU_ITEMS_PER_TXN);
      if (events.length === 0 && expired.length === 0) return null;
      const cursorUpdates: Record<string, number> = {};
      for (const e of events) cursorUpdates[e.room_id] = Math.max(cursorUpdates[e.room_id] ?? 0, Number(e.seq));
      const txn: PendingTxn = {
        txnId: `${this.now()}.${randomBytes(4).toString('hex')}`,
        body: {
          origin: this.serverName,
          origin_server_ts: this.now(),
          pdus: events.map((e) => e.pdu),
          edus: [],
          ...(expired.length > 0 ? { expired_peeks: expired.map((x) => ({ room_id: x.roomId, peek_id: x.peekId })) } : {}),
        },
        cursors: cursorUpdates,
        outboxSeqs: expired.map((x) => x.seq),
      };
      await tx.insert(federationsenderPendingTxns).values({
        destination: dest,
        txnId: txn.txnId,
        body: txn.body,
        cursors: txn.cursors,
        outboxSeqs: txn.outboxSeqs,
        createdAt: this.now(),
      });
      return txn;
    });
  }
}
