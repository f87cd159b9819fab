// Commands a room actor takes. Every command names its room; `commandId` makes a retried
// command idempotent on the log (it becomes the events' Nats-Msg-Id).
import type { PeekEndReason } from '../events/peekEvents.ts';
import type { Pdu } from '../events/roomEvents.ts';

interface Base {
  roomId: string;
}

// --- peeks -----------------------------------------------------------------------------
export interface StartDevicePeek extends Base {
  type: 'StartDevicePeek';
  userId: string;
  deviceId: string;
}
export interface StopDevicePeek extends Base {
  type: 'StopDevicePeek';
  userId: string;
  deviceId: string;
  reason: Extract<PeekEndReason, 'unpeeked' | 'device_removed'>;
}
export interface StartInboundPeek extends Base {
  type: 'StartInboundPeek';
  server: string;
  peekId: string;
  /** Room versions the remote understands (`ver` query parameters; none means ['1']). */
  roomVersions: string[];
}
export interface RenewInboundPeek extends Base {
  type: 'RenewInboundPeek';
  server: string;
  peekId: string;
}
export interface DeleteInboundPeek extends Base {
  type: 'DeleteInboundPeek';
  server: string;
  peekId: string;
}
export interface StartOutboundPeek extends Base {
  type: 'StartOutboundPeek';
  server: string;
  peekId: string;
  renewalIntervalMs: number;
  /** The verified snapshot, appended to ROOMS before the peek starts (events this room lacks). */
  pdus: ReceivedPdu[];
}
export interface RenewOutboundPeek extends Base {
  type: 'RenewOutboundPeek';
  server: string;
  peekId: string;
  renewalIntervalMs: number;
}
export interface EndOutboundPeek extends Base {
  type: 'EndOutboundPeek';
  server: string;
  reason: Extract<PeekEndReason, 'unpeeked' | 'no_active_peekers' | 'remote_deleted' | 'rejected' | 'timed_out'>;
}
/** Expire whatever is due at `now`. */
export interface Tick extends Base {
  type: 'Tick';
}

// --- room events -----------------------------------------------------------------------
/** A new event authored on this server, for a room hosted here. */
export interface PduDraft {
  type: string;
  sender: string;
  content: Record<string, unknown>;
  state_key?: string;
  redacts?: string;
}
export interface CreateRoom extends Base {
  type: 'CreateRoom';
  roomVersion: string;
  /** m.room.create first, then the rest in order (the HTTP layer expands presets). */
  events: PduDraft[];
}
export interface SendEvents extends Base {
  type: 'SendEvents';
  events: PduDraft[];
  /** Idempotency: the same (device, txnId) returns the first event again. */
  txn?: { deviceId: string; txnId: string };
}
/** A PDU received over federation whose hash and signature were already checked. */
export interface ReceivedPdu {
  eventId: string;
  pdu: Pdu;
  /** History from backfill: stored, never folded into the room's current state. */
  history?: boolean;
}
export interface ReceivePdus extends Base {
  type: 'ReceivePdus';
  origin: string;
  pdus: ReceivedPdu[];
  /** History (backfill): events older than what the room holds; appended as origin 'backfill'. */
  history?: boolean;
}

export type RoomCommand =
  StartDevicePeek | StopDevicePeek | StartInboundPeek | RenewInboundPeek | DeleteInboundPeek | StartOutboundPeek | RenewOutboundPeek | EndOutboundPeek | Tick | CreateRoom | SendEvents | ReceivePdus;

/** Settings the decider reads; part of the decision's input like `now`. */
export interface DecideContext {
  now: number;
  serverName: string;
  peekLifetimeMs: number;
  inboundRenewalIntervalMs: number;
}
