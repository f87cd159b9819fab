// A tiny given/when/then DSL for the room decider, in the style of emmett's
// DeciderSpecification:
//
//   given(storedEvents).when(command, ctx?).then(expectedPeekEvents)
//   given(storedEvents).when(command, ctx?).then({ drafts, received, peeks, existingEventId })
//   given(storedEvents).when(command, ctx?).thenThrows(ForbiddenError, /world_readable/)
//
// `given` folds the stored events with `evolve`, starting from `initialState(command.roomId)`.
// `then` compares the WHOLE decision (missing fields of a partial decision mean "empty"),
// so an unexpected draft, received PDU or peek event fails the test. Every `when` also
// checks that decide is pure: it leaves its input state untouched and decides the same
// twice. Plus builders for stored room/peek events and a world_readable public room.
import { expect } from 'vitest';
import type { DecideContext, ReceivedPdu, RoomCommand } from '../../src/actors/commands.ts';
import { decide, decision, type Decision } from '../../src/actors/decide.ts';
import { DomainError } from '../../src/actors/errors.ts';
import { evolve, type StoredEvent } from '../../src/actors/evolve.ts';
import { initialState, type RoomState } from '../../src/actors/state.ts';
import type { PeekEndReason, PeekEvent, PeekExpired, PeekRef, PeekRenewed, PeekStarted } from '../../src/events/peekEvents.ts';
import type { Pdu } from '../../src/events/roomEvents.ts';

// --- fixtures ----------------------------------------------------------------------------

export const SERVER = 'example.org';
export const REMOTE = 'remote.org';
export const ROOM = '!room:example.org';
export const REMOTE_ROOM = '!far:remote.org';
export const ALICE = '@alice:example.org'; // creator of ROOM, joined, power 100
export const BOB = '@bob:example.org'; // a local user who is not in ROOM
export const DAVE = '@dave:example.org'; // another local user who is not in ROOM
export const CAROL = '@carol:remote.org'; // creator of REMOTE_ROOM

/** Decision time used when a test does not say otherwise. */
export const T0 = 1_700_000_000_000;
export const PEEK_LIFETIME_MS = 60_000;
export const INBOUND_INTERVAL_MS = 3_600_000;
/** inboundGraceMs(3_600_000) = min(ceil(3_600_000 / 2), 60_000). */
export const INBOUND_GRACE_MS = 60_000;

export function ctxAt(now: number, overrides: Partial<DecideContext> = {}): DecideContext {
  return { now, serverName: SERVER, peekLifetimeMs: PEEK_LIFETIME_MS, inboundRenewalIntervalMs: INBOUND_INTERVAL_MS, ...overrides };
}

// --- the DSL ---------------------------------------------------------------------------

type ErrorClass<E extends Error> = abstract new (...args: never[]) => E;

export interface Then {
  /** The folded state the command was decided against. */
  readonly state: RoomState;
  /** What decide returned (or threw). */
  readonly result: Decision | DomainError;
  /** Exactly these peek events, and no drafts, received PDUs or existingEventId. */
  then(expected: PeekEvent[]): Decision;
  /** Exactly this decision; fields left out must be empty. */
  then(expected: Partial<Decision>): Decision;
  /** decide refused with (returned or threw) an instance of `errorClass`, message matching. */
  thenThrows<E extends Error>(errorClass: ErrorClass<E>, message?: string | RegExp): E;
}

export interface When {
  when(command: RoomCommand, ctx?: Partial<DecideContext>): Then;
}

function run(state: RoomState, command: RoomCommand, ctx: DecideContext): Decision | DomainError {
  try {
    return decide(state, command, ctx);
  } catch (err) {
    if (err instanceof DomainError) return err;
    throw err;
  }
}

function describeResult(result: Decision | DomainError): string {
  return result instanceof Error ? `${result.name}: ${result.message}` : JSON.stringify(result);
}

export function given(events: StoredEvent[]): When {
  return {
    when(command: RoomCommand, ctxOverrides: Partial<DecideContext> = {}): Then {
      for (const e of events) {
        if (e.event.roomId !== command.roomId) {
          throw new Error(`spec error: given event for ${e.event.roomId}, command for ${command.roomId}`);
        }
      }
      const state = stateOf(command.roomId, events);
      const ctx = ctxAt(T0, ctxOverrides);
      const before = structuredClone(state);
      const result = run(state, command, ctx);
      // decide is pure: the state it was given is untouched, and it decides the same twice.
      expect(state, 'decide mutated its input state').toEqual(before);
      const again = run(state, command, ctx);
      if (result instanceof Error) {
        expect(again, 'decide is not deterministic').toBeInstanceOf(result.constructor);
        expect((again as Error).message).toBe(result.message);
      } else {
        expect(again, 'decide is not deterministic').toEqual(result);
      }

      return {
        state,
        result,
        then(expected: PeekEvent[] | Partial<Decision>): Decision {
          if (result instanceof Error) {
            throw new Error(`expected a decision, got ${describeResult(result)}`);
          }
          const want = Array.isArray(expected) ? decision({ peeks: expected }) : decision(expected);
          expect(result).toEqual(want);
          // toEqual treats an undefined property as missing; existingEventId must match exactly.
          expect(result.existingEventId).toBe(want.existingEventId);
          return result;
        },
        thenThrows<E extends Error>(errorClass: ErrorClass<E>, message?: string | RegExp): E {
          if (!(result instanceof errorClass)) {
            throw new Error(`expected ${errorClass.name}, got ${describeResult(result)}`);
          }
          if (typeof message === 'string') expect(result.message).toContain(message);
          else if (message) expect(result.message).toMatch(message);
          return result as E;
        },
      };
    },
  };
}

/** initialState(roomId) with `events` folded in by evolve. */
export function stateOf(roomId: string, events: StoredEvent[]): RoomState {
  return events.reduce((s, e) => evolve(s, e), initialState(roomId));
}

/**
 * Folds a decision into a state the way the shell would: drafts are not foldable (they
 * have no IDs yet) and must be absent; received PDUs go to ROOMS, peeks to PEEKS, with
 * consecutive sequence numbers after the state's own.
 */
export function applyDecision(state: RoomState, d: Decision): RoomState {
  if (d.drafts.length > 0) throw new Error('spec error: drafts cannot be folded without the PDU factory');
  let next = state;
  for (const r of d.received) {
    next = evolve(next, roomPdu(next.roomsSeq + 1, r.eventId, r.pdu, { origin: 'federation' }));
  }
  for (const p of d.peeks) next = evolve(next, onPeeks(next.peeksSeq + 1, p));
  return next;
}

/** The stored events a decision's peeks become, numbered from `firstSeq`. */
export function storedPeeks(firstSeq: number, peeks: PeekEvent[]): StoredEvent[] {
  return peeks.map((p, i) => onPeeks(firstSeq + i, p));
}

// --- room event builders ---------------------------------------------------------------

export interface PduSpec {
  type: string;
  sender: string;
  content?: Record<string, unknown>;
  state_key?: string;
  room_id?: string;
  depth?: number;
  origin_server_ts?: number;
}

export function pdu(spec: PduSpec): Pdu {
  const out: Pdu = {
    type: spec.type,
    room_id: spec.room_id ?? ROOM,
    sender: spec.sender,
    content: spec.content ?? {},
    depth: spec.depth ?? 1,
    origin_server_ts: spec.origin_server_ts ?? T0 - 1_000_000,
    prev_events: [],
    auth_events: [],
    hashes: { sha256: 'x' },
    signatures: {},
  };
  if (spec.state_key !== undefined) out.state_key = spec.state_key;
  return out;
}

export interface StoreOptions {
  roomVersion?: string;
  origin?: 'local' | 'federation';
  txn?: { deviceId: string; txnId: string };
}

export function roomPdu(seq: number, eventId: string, p: Pdu, opts: StoreOptions = {}): StoredEvent {
  return {
    stream: 'rooms',
    seq,
    event: {
      type: 'RoomPdu',
      v: 1,
      roomId: p.room_id,
      eventId,
      roomVersion: opts.roomVersion ?? '10',
      pdu: p,
      origin: opts.origin ?? 'local',
      ...(opts.txn ? { txn: opts.txn } : {}),
    },
  };
}

/** A stored state event on ROOMS. */
export function stateEvent(
  seq: number,
  eventId: string,
  type: string,
  sender: string,
  content: Record<string, unknown>,
  stateKey = '',
  opts: StoreOptions & { roomId?: string; depth?: number } = {},
): StoredEvent {
  return roomPdu(seq, eventId, pdu({ type, sender, content, state_key: stateKey, room_id: opts.roomId ?? ROOM, depth: opts.depth ?? seq }), opts);
}

/** A stored m.room.member event (sender defaults to the target: a self join/leave). */
export function member(seq: number, eventId: string, userId: string, membership: string, opts: StoreOptions & { roomId?: string; sender?: string } = {}): StoredEvent {
  return stateEvent(seq, eventId, 'm.room.member', opts.sender ?? userId, { membership }, userId, opts);
}

export function message(seq: number, eventId: string, sender: string, body: string, opts: StoreOptions & { roomId?: string } = {}): StoredEvent {
  return roomPdu(seq, eventId, pdu({ type: 'm.room.message', sender, content: { msgtype: 'm.text', body }, room_id: opts.roomId ?? ROOM, depth: seq }), opts);
}

export interface RoomOptions {
  roomId?: string;
  creator?: string;
  roomVersion?: string;
  /** null: no m.room.history_visibility event at all. */
  historyVisibility?: string | null;
  joinRule?: string;
  origin?: 'local' | 'federation';
}

/** ROOMS sequences of the standard room's events: deliberately sparse (ROOMS is shared by all rooms). */
export const ROOM_SEQS = [3, 7, 11, 15, 19] as const;
/** ROOMS sequence of the standard room's latest PDU (its history_visibility event). */
export const ROOM_LATEST_SEQ = 19;

/**
 * A public room: create by the creator, the creator's join, power levels giving the
 * creator 100, join_rules (public) and history_visibility (world_readable).
 * Defaults: ROOM on example.org, created by ALICE, room version 10.
 */
export function publicRoom(opts: RoomOptions = {}): StoredEvent[] {
  const roomId = opts.roomId ?? ROOM;
  const creator = opts.creator ?? ALICE;
  const roomVersion = opts.roomVersion ?? '10';
  const store: StoreOptions & { roomId: string } = { roomId, roomVersion, origin: opts.origin ?? 'local' };
  const seqs = [...ROOM_SEQS];
  const next = (): number => seqs.shift()!;
  const events: StoredEvent[] = [
    stateEvent(next(), '$create', 'm.room.create', creator, { room_version: roomVersion, creator }, '', { ...store, depth: 1 }),
    member(next(), '$creator-join', creator, 'join', { ...store }),
    stateEvent(next(), '$power', 'm.room.power_levels', creator, { users: { [creator]: 100 }, users_default: 0, state_default: 50, events_default: 0 }, '', store),
    stateEvent(next(), '$join-rules', 'm.room.join_rules', creator, { join_rule: opts.joinRule ?? 'public' }, '', store),
  ];
  const hv = opts.historyVisibility === undefined ? 'world_readable' : opts.historyVisibility;
  if (hv !== null) {
    events.push(stateEvent(next(), '$history', 'm.room.history_visibility', creator, { history_visibility: hv }, '', store));
  }
  return events;
}

/** The world_readable public room ROOM, hosted on example.org, created by ALICE. */
export function worldReadableRoom(): StoredEvent[] {
  return publicRoom();
}

/** The world_readable public room REMOTE_ROOM, hosted on remote.org (created by CAROL), as received over federation. */
export function remoteRoom(): StoredEvent[] {
  return publicRoom({ roomId: REMOTE_ROOM, creator: CAROL, origin: 'federation' });
}

/** Stored ROOMS events as the ReceivedPdu items of a federation snapshot / transaction. */
export function asReceived(events: StoredEvent[]): ReceivedPdu[] {
  return events.map((e) => {
    if (e.stream !== 'rooms') throw new Error('spec error: only ROOMS events can be received');
    return { eventId: e.event.eventId, pdu: e.event.pdu };
  });
}

// --- peek event builders ---------------------------------------------------------------

export const device = (userId: string, deviceId: string): PeekRef => ({ kind: 'device', userId, deviceId });
export const inbound = (server: string, peekId: string): PeekRef => ({ kind: 'inbound', server, peekId });
export const outbound = (server: string, peekId: string): PeekRef => ({ kind: 'outbound', server, peekId });

export function peekStarted(peek: PeekRef, at: number, extra: { expiresAt?: number; renewalIntervalMs?: number; roomSeq?: number; roomId?: string } = {}): PeekStarted {
  const { roomId = ROOM, ...rest } = extra;
  return { type: 'PeekStarted', v: 1, roomId, peek, at, ...rest };
}

export function peekRenewed(peek: PeekRef, at: number, extra: { expiresAt?: number; renewalIntervalMs?: number; roomId?: string } = {}): PeekRenewed {
  const { roomId = ROOM, ...rest } = extra;
  return { type: 'PeekRenewed', v: 1, roomId, peek, at, ...rest };
}

export function peekExpired(peek: PeekRef, at: number, reason: PeekEndReason, roomId = ROOM): PeekExpired {
  return { type: 'PeekExpired', v: 1, roomId, peek, at, reason };
}

/** A peek event as stored on PEEKS. */
export function onPeeks(seq: number, event: PeekEvent): StoredEvent {
  return { stream: 'peeks', seq, event };
}

/** Stored PeekStarted of a device peek at `at` with the standard lifetime. */
export function devicePeekAt(seq: number, userId: string, deviceId: string, at: number, roomId = ROOM): StoredEvent {
  return onPeeks(seq, peekStarted(device(userId, deviceId), at, { expiresAt: at + PEEK_LIFETIME_MS, roomSeq: ROOM_LATEST_SEQ, roomId }));
}

/** Stored PeekStarted of an inbound peek at `at` with the standard interval and grace. */
export function inboundPeekAt(seq: number, server: string, peekId: string, at: number): StoredEvent {
  return onPeeks(
    seq,
    peekStarted(inbound(server, peekId), at, {
      expiresAt: at + INBOUND_INTERVAL_MS + INBOUND_GRACE_MS,
      renewalIntervalMs: INBOUND_INTERVAL_MS,
      roomSeq: ROOM_LATEST_SEQ,
    }),
  );
}

/** Stored PeekStarted of an outbound peek of REMOTE_ROOM at `at`. */
export function outboundPeekAt(seq: number, server: string, peekId: string, at: number, intervalMs: number): StoredEvent {
  return onPeeks(seq, peekStarted(outbound(server, peekId), at, { expiresAt: at + intervalMs, renewalIntervalMs: intervalMs, roomId: REMOTE_ROOM }));
}
