// Generated peek logs for the replay, verify, audit and CLI tests: plausible room
// histories, a fast concurrent appender, and the read-model tables computed here,
// independently of the projection code, from the events that were appended.
import { randomUUID } from 'node:crypto';
import { asc, sql, type SQL } from 'drizzle-orm';
import type { PgColumn } from 'drizzle-orm/pg-core';
import type { Clock } from '../../src/actors/roomActor.ts';
import type { PduDraft, RoomCommand } from '../../src/actors/commands.ts';
import { encodeEnvelope, position } from '../../src/events/envelope.ts';
import { encodePeekEvent, type PeekEndReason, type PeekEvent, type PeekRef } from '../../src/events/peekEvents.ts';
import type { AuditEntry } from '../../src/projections/auditQuery.ts';
import type { StoredRoomEvent } from '../../src/events/roomEvents.ts';
import type { Naming } from '../../src/events/subjects.ts';
import type { EventLog } from '../../src/nats/eventLog.ts';
import type { Db, Tx } from '../../src/store/db.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, peekAudit, syncapiCurrentState, syncapiPeeks, syncapiRoomEvents } from '../../src/store/schema.ts';

export const T0 = 1_700_000_000_000;
export const HOUR = 3_600_000;

export class ManualClock implements Clock {
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
}

/** Deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A message on PEEKS at the sequence JetStream gave it: a v1 peek event, or an unknown shape (`event: null`). */
export interface Placed {
  seq: number;
  roomId: string;
  shard: number;
  event: PeekEvent | null;
}

export const DEVICE_REASONS: PeekEndReason[] = ['unpeeked', 'timed_out', 'joined', 'visibility_changed', 'encrypted', 'device_removed'];
export const INBOUND_REASONS: PeekEndReason[] = ['timed_out', 'remote_deleted', 'visibility_changed', 'encrypted', 'rejected'];
export const OUTBOUND_REASONS: PeekEndReason[] = ['no_active_peekers', 'remote_deleted', 'unpeeked', 'rejected', 'timed_out'];

export interface Peekers {
  users: string[];
  devices: string[];
  inboundServers: string[];
  outboundServers: string[];
}

export const DEFAULT_PEEKERS: Peekers = {
  users: ['@ann:example.org', '@bo:example.org', '@cy:other.example', '@di:example.org'],
  devices: ['PHONE', 'LAPTOP'],
  inboundServers: ['peer.example', 'peer2.example:8448', '[::1]:8449'],
  outboundServers: ['remote.example', 'remote2.example'],
};

export interface HistoryOptions {
  peekers?: Peekers;
  /** Time of the first event (each next one is 1–1.5 s later). */
  startAt?: number;
  /** Share of messages of a shape v1 readers skip (default 0.015). */
  unknownShare?: number;
}

/**
 * A plausible history for one room, as its actor would write it: one live peek per
 * device / (server, peekId) / outbound server; renewals and expiries only of live peeks;
 * optional fields sometimes left out; now and then a message of an unknown shape.
 */
export function roomHistory(roomId: string, steps: number, seed: number, options: HistoryOptions = {}): object[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const chance = (p: number) => rnd() < p;
  const peekers = options.peekers ?? DEFAULT_PEEKERS;
  const live = new Map<string, { peek: PeekRef }>();
  const out: object[] = [];
  let at = options.startAt ?? T0 + seed * 7;
  const devices: PeekRef[] = peekers.users.flatMap((userId) => peekers.devices.map((deviceId): PeekRef => ({ kind: 'device', userId, deviceId })));
  const inbound: PeekRef[] = peekers.inboundServers.flatMap((server) => ['p1', 'p2'].map((peekId): PeekRef => ({ kind: 'inbound', server, peekId })));
  const keyOf = (p: PeekRef) => (p.kind === 'device' ? `d ${p.userId} ${p.deviceId}` : p.kind === 'inbound' ? `i ${p.server} ${p.peekId}` : `o ${p.server}`);
  const unknownShare = options.unknownShare ?? 0.015;

  for (let step = 0; step < steps; step++) {
    at += 1000 + Math.floor(rnd() * 500);
    const r = rnd();
    if (r < unknownShare) {
      // A newer shape (v2) or an unknown type: readers skip it.
      out.push(chance(0.5) ? { type: 'PeekStarted', v: 2, roomId, peek: pick(devices), at, lease: 'x' } : { type: 'PeekPaused', v: 1, roomId, peek: pick(devices), at });
      continue;
    }
    let peek: PeekRef;
    if (r < 0.6) peek = pick(devices);
    else if (r < 0.85) peek = pick(inbound);
    else {
      const server = pick(peekers.outboundServers);
      const current = live.get(`o ${server}`);
      peek = current ? current.peek : { kind: 'outbound', server, peekId: pick(['o1', 'o2', 'o3']) };
    }
    const key = keyOf(peek);
    const current = live.get(key);
    if (!current) {
      const base = { type: 'PeekStarted', v: 1, roomId, peek, at };
      if (peek.kind === 'device') {
        out.push({ ...base, ...(chance(0.9) ? { expiresAt: at + HOUR } : {}), ...(chance(0.9) ? { roomSeq: Math.floor(rnd() * 5000) } : {}) });
      } else {
        const interval = pick([60_000, 600_000, HOUR]);
        out.push({
          ...base,
          ...(chance(0.95) ? { renewalIntervalMs: interval } : {}),
          ...(chance(0.85) ? { expiresAt: at + interval + 30_000 } : {}),
          ...(peek.kind === 'inbound' && chance(0.9) ? { roomSeq: Math.floor(rnd() * 5000) } : {}),
        });
      }
      live.set(key, { peek });
    } else if (chance(0.55)) {
      const base = { type: 'PeekRenewed', v: 1, roomId, peek: current.peek, at };
      if (peek.kind === 'device') out.push({ ...base, ...(chance(0.9) ? { expiresAt: at + HOUR } : {}) });
      else {
        const interval = chance(0.7) ? pick([60_000, 600_000, HOUR]) : undefined;
        const withDeadline = interval !== undefined || chance(0.6);
        out.push({ ...base, ...(interval ? { renewalIntervalMs: interval } : {}), ...(withDeadline ? { expiresAt: at + (interval ?? 60_000) + 30_000 } : {}) });
      }
    } else {
      const reason = pick(peek.kind === 'device' ? DEVICE_REASONS : peek.kind === 'inbound' ? INBOUND_REASONS : OUTBOUND_REASONS);
      out.push({ type: 'PeekExpired', v: 1, roomId, peek: current.peek, at, reason });
      live.delete(key);
    }
  }
  return out;
}

export function isKnown(value: object): value is PeekEvent {
  const v = value as { v?: unknown; type?: unknown };
  return v.v === 1 && (v.type === 'PeekStarted' || v.type === 'PeekRenewed' || v.type === 'PeekExpired');
}

/** Known events through the actors' own encoder; unknown shapes as raw JSON. */
export function encodeAny(e: object): Uint8Array {
  return isKnown(e) ? encodePeekEvent(e) : Buffer.from(JSON.stringify(e), 'utf8');
}

export interface AppendOptions {
  /** Rooms appended at once. */
  concurrency?: number;
  /** Events per append call (one envelope, expected-sequence checked). */
  chunk?: number;
  /**
   * Bulk mode: no stack traces while appending. The NATS client builds an Error (for its
   * stack) with every publish; without the stack capture a bulk append is ~40% faster.
   * Only for setup phases where nothing else runs.
   */
  bulk?: boolean;
}

/**
 * Appends every room's history, `concurrency` rooms at a time in chunks, so the stream
 * interleaves them. Returns the messages at their sequences, in stream order.
 */
export async function appendHistories(log: EventLog, naming: Naming, histories: Map<string, object[]>, options: AppendOptions = {}): Promise<Placed[]> {
  const queue = [...histories];
  const placed: Placed[] = [];
  const chunk = options.chunk ?? 100;
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [roomId, events] = next;
      let expected = await log.lastSeq('peeks', roomId);
      for (let i = 0; i < events.length; i += chunk) {
        const part = events.slice(i, i + chunk);
        // One envelope per chunk: unknown shapes keep their index, as readers must.
        const { seq } = await log.append('peeks', roomId, encodeEnvelope(`gen:${randomUUID()}`, part), expected, `gen:${randomUUID()}`);
        const mine = part.map((e, j): Placed => ({ seq: position(seq, j), roomId, shard: naming.shardOf(roomId), event: isKnown(e) ? e : null }));
        placed.push(...mine);
        expected = seq;
      }
    }
  };
  const stackTraceLimit = Error.stackTraceLimit;
  if (options.bulk) Error.stackTraceLimit = 0;
  try {
    await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 32, histories.size) }, worker));
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  return placed.sort((a, b) => a.seq - b.seq);
}

// --- the reference tables, computed without the projection code -------------------------

type SyncRow = typeof syncapiPeeks.$inferSelect;
type InboundRow = typeof federationsenderInboundPeeks.$inferSelect;
type OutboundRow = typeof federationsenderOutboundPeeks.$inferSelect;
export type AuditRow = typeof peekAudit.$inferSelect;
type RoomEventRow = typeof syncapiRoomEvents.$inferSelect;
type StateRow = typeof syncapiCurrentState.$inferSelect;

export interface PeekTables {
  syncapi_peeks: SyncRow[];
  federationsender_inbound_peeks: InboundRow[];
  federationsender_outbound_peeks: OutboundRow[];
  peek_audit: AuditRow[];
}

export interface RoomTables {
  syncapi_room_events: RoomEventRow[];
  syncapi_current_state: StateRow[];
}

const cmp = (a: unknown, b: unknown) => ((a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0);
const byKeys =
  <R>(...keys: (keyof R)[]) =>
  (a: R, b: R) => {
    for (const k of keys) {
      const c = cmp(a[k], b[k]);
      if (c !== 0) return c;
    }
    return 0;
  };

/** The peek_audit row of one event (the audit contract, spelled out here). */
export function auditRowOf({ seq, roomId, shard, event: e }: Placed & { event: PeekEvent }): AuditRow {
  const p = e.peek;
  return {
    seq,
    roomId,
    shard,
    eventType: e.type,
    kind: p.kind,
    userId: p.kind === 'device' ? p.userId : null,
    deviceId: p.kind === 'device' ? p.deviceId : null,
    serverName: p.kind === 'device' ? null : p.server,
    peekId: p.kind === 'device' ? null : p.peekId,
    at: e.at,
    expiresAt: e.type !== 'PeekExpired' && e.expiresAt !== undefined ? e.expiresAt : null,
    renewalIntervalMs: e.type !== 'PeekExpired' && e.renewalIntervalMs !== undefined ? e.renewalIntervalMs : null,
    reason: e.type === 'PeekExpired' ? e.reason : null,
  };
}

/** The audit entry of one appended event: the contract of the admin endpoint and of `--format jsonl`. */
export function auditEntryOf({ seq, roomId, event: e }: Placed & { event: PeekEvent }): AuditEntry {
  const p = e.peek;
  return {
    seq,
    room_id: roomId,
    event: e.type,
    kind: p.kind,
    ...(p.kind === 'device' ? { user_id: p.userId, device_id: p.deviceId } : { server_name: p.server, peek_id: p.peekId }),
    at: e.at,
    ...(e.type !== 'PeekExpired' && e.expiresAt !== undefined ? { expires_at: e.expiresAt } : {}),
    ...(e.type !== 'PeekExpired' && e.renewalIntervalMs !== undefined ? { renewal_interval_ms: e.renewalIntervalMs } : {}),
    ...(e.type === 'PeekExpired' ? { reason: e.reason } : {}),
  };
}

export function referencePeekTables(placed: Placed[], upToSeq = Infinity): PeekTables {
  const sync = new Map<string, SyncRow>();
  const inbound = new Map<string, InboundRow>();
  const outbound = new Map<string, OutboundRow>();
  const audit: AuditRow[] = [];
  for (const item of [...placed].sort((a, b) => a.seq - b.seq)) {
    const { seq, roomId, shard, event: e } = item;
    if (seq > upToSeq || e === null) continue;
    const p = e.peek;
    audit.push(auditRowOf({ ...item, event: e }));
    if (p.kind === 'device') {
      const k = `${roomId}|${p.userId}|${p.deviceId}`;
      const row = sync.get(k);
      if (e.type === 'PeekStarted') {
        const replaced = row && row.endedSeq !== null ? row : undefined;
        sync.set(k, {
          roomId,
          userId: p.userId,
          deviceId: p.deviceId,
          shard,
          startedSeq: seq,
          startedAt: e.at,
          renewedAt: e.at,
          expiresAt: e.expiresAt ?? null,
          roomSeq: e.roomSeq ?? 0,
          updatedSeq: seq,
          endedSeq: null,
          endedAt: null,
          endReason: null,
          endedRoomSeq: null,
          prevStartedSeq: replaced?.startedSeq ?? null,
          prevEndedSeq: replaced?.endedSeq ?? null,
        });
      } else if (row && e.type === 'PeekRenewed') {
        sync.set(k, { ...row, renewedAt: e.at, expiresAt: e.expiresAt ?? null, updatedSeq: seq });
      } else if (row && e.type === 'PeekExpired') {
        sync.set(k, { ...row, endedSeq: seq, endedAt: e.at, endReason: e.reason, endedRoomSeq: e.roomSeq ?? null, updatedSeq: seq });
      }
    } else {
      const table = p.kind === 'inbound' ? inbound : outbound;
      const k = p.kind === 'inbound' ? `${roomId}|${p.server}|${p.peekId}` : `${roomId}|${p.server}`;
      const row = table.get(k);
      if (e.type === 'PeekStarted') {
        const interval = e.renewalIntervalMs ?? 0;
        const common = {
          roomId,
          serverName: p.server,
          peekId: p.peekId,
          shard,
          createdAt: e.at,
          renewedAt: e.at,
          renewalIntervalMs: interval,
          expiresAt: e.expiresAt ?? e.at + interval,
          startedSeq: seq,
        };
        if (p.kind === 'inbound') inbound.set(k, { ...common, roomSeq: e.roomSeq ?? 0 });
        else outbound.set(k, common);
      } else if (row && e.type === 'PeekRenewed') {
        const interval = e.renewalIntervalMs ?? row.renewalIntervalMs;
        table.set(k, { ...row, renewedAt: e.at, renewalIntervalMs: interval, expiresAt: e.expiresAt ?? e.at + interval } as InboundRow & OutboundRow);
      } else if (e.type === 'PeekExpired') {
        table.delete(k);
      }
    }
  }
  return {
    syncapi_peeks: [...sync.values()].sort(byKeys<SyncRow>('roomId', 'userId', 'deviceId')),
    federationsender_inbound_peeks: [...inbound.values()].sort(byKeys<InboundRow>('roomId', 'serverName', 'peekId')),
    federationsender_outbound_peeks: [...outbound.values()].sort(byKeys<OutboundRow>('roomId', 'serverName')),
    peek_audit: audit,
  };
}

/** syncapi_room_events and syncapi_current_state from the room events appended. */
export function referenceRoomTables(stored: StoredRoomEvent[]): RoomTables {
  const events: RoomEventRow[] = [];
  const state = new Map<string, StateRow>();
  for (const { seq, event } of [...stored].sort((a, b) => a.seq - b.seq)) {
    const { pdu } = event;
    events.push({
      seq,
      roomId: event.roomId,
      eventId: event.eventId,
      type: pdu.type,
      stateKey: typeof pdu.state_key === 'string' ? pdu.state_key : null,
      sender: pdu.sender,
      originServerTs: pdu.origin_server_ts,
      pdu,
      txnDeviceId: event.txn?.deviceId ?? null,
      txnId: event.txn?.txnId ?? null,
      depth: pdu.depth,
      backfilled: event.origin === 'backfill',
    });
    // History from backfill never changes the current state.
    if (typeof pdu.state_key !== 'string' || event.origin === 'backfill') continue;
    state.set(`${event.roomId}|${pdu.type}|${pdu.state_key}`, {
      roomId: event.roomId,
      type: pdu.type,
      stateKey: pdu.state_key,
      eventId: event.eventId,
      seq,
      membership: pdu.type === 'm.room.member' && typeof pdu.content.membership === 'string' ? pdu.content.membership : null,
      content: pdu.content,
    });
  }
  return {
    syncapi_room_events: events,
    syncapi_current_state: [...state.values()].sort(byKeys<StateRow>('roomId', 'type', 'stateKey')),
  };
}

/** Byte order, as the JS comparison above (identifiers here are ASCII). */
const c = (col: PgColumn): SQL => sql`${col} collate "C"`;

export async function readPeekTables(db: Db | Tx): Promise<PeekTables> {
  const s = syncapiPeeks;
  const i = federationsenderInboundPeeks;
  const o = federationsenderOutboundPeeks;
  return {
    syncapi_peeks: await db.select().from(s).orderBy(c(s.roomId), c(s.userId), c(s.deviceId)),
    federationsender_inbound_peeks: await db.select().from(i).orderBy(c(i.roomId), c(i.serverName), c(i.peekId)),
    federationsender_outbound_peeks: await db.select().from(o).orderBy(c(o.roomId), c(o.serverName)),
    peek_audit: await db.select().from(peekAudit).orderBy(asc(peekAudit.seq)),
  };
}

export async function readRoomTables(db: Db | Tx): Promise<RoomTables> {
  const s = syncapiCurrentState;
  return {
    syncapi_room_events: await db.select().from(syncapiRoomEvents).orderBy(asc(syncapiRoomEvents.seq)),
    syncapi_current_state: await db.select().from(s).orderBy(c(s.roomId), c(s.type), c(s.stateKey)),
  };
}

// --- real rooms, through the room actors -----------------------------------------------

/** A public, world-readable room created by `creator` (so local devices may peek it). */
export function createRoomCommand(roomId: string, creator: string): RoomCommand {
  const events: PduDraft[] = [
    { type: 'm.room.create', sender: creator, state_key: '', content: { room_version: '10' } },
    { type: 'm.room.member', sender: creator, state_key: creator, content: { membership: 'join' } },
    {
      type: 'm.room.power_levels',
      sender: creator,
      state_key: '',
      content: { users: { [creator]: 100 }, users_default: 0, events_default: 0, state_default: 50 },
    },
    { type: 'm.room.join_rules', sender: creator, state_key: '', content: { join_rule: 'public' } },
    { type: 'm.room.history_visibility', sender: creator, state_key: '', content: { history_visibility: 'world_readable' } },
  ];
  return { type: 'CreateRoom', roomId, roomVersion: '10', events };
}
