// /sync: joined rooms, peeked rooms (MSC2753), invites and left rooms, between two
// positions. A peek arrives like a join; an ended peek appears once under `leave`; a
// peeking user who joins moves from `peek` to `join` without the state again.
import type { Pdu } from '../events/roomEvents';
import { clientEvents, type RoomReader, type StoredEvent } from './roomReader';
import { withoutRoomId } from './clientEvents';
import type { DevicePeekRow, PeekReader } from './peekReader';
import type { SyncNotifier } from './notifier';
import { formatSyncToken, formatTopologicalToken, type SyncPosition } from './syncToken';

export const DEFAULT_TIMELINE_LIMIT = 20;
export const MAX_TIMELINE_LIMIT = 1000;

export interface SyncRequest {
  userId: string;
  deviceId: string;
  since?: SyncPosition;
  timeoutMs: number;
  fullState: boolean;
  timelineLimit: number;
  signal?: AbortSignal;
}

type RoomSection = Record<string, unknown>;

export interface SyncResponse {
  next_batch: string;
  rooms: { join: Record<string, RoomSection>; peek: Record<string, RoomSection>; leave: Record<string, RoomSection>; invite: Record<string, RoomSection> };
  presence: { events: unknown[] };
  account_data: { events: unknown[] };
  to_device: { events: unknown[] };
  device_lists: { changed: string[]; left: string[] };
  device_one_time_keys_count: Record<string, number>;
}

export interface SyncDeps {
  rooms: RoomReader;
  peeks: PeekReader;
  notifier: SyncNotifier;
  /** Committed positions of the sync projections. */
  positions(): SyncPosition;
  now(): number;
}

/** A state event that ends what a peek may see: the room stops being world_readable or turns on encryption. */
function endsPeekVisibility(pdu: Pdu): boolean {
  if (pdu.state_key !== '') return false;
  if (pdu.type === 'm.room.encryption') return true;
  return pdu.type === 'm.room.history_visibility' && pdu.content.history_visibility !== 'world_readable';
}

export class SyncService {
  constructor(private readonly deps: SyncDeps) {}

  async sync(req: SyncRequest): Promise<SyncResponse> {
    const deadline = this.deps.now() + req.timeoutMs;
    for (;;) {
      const upto = this.deps.positions();
      const { response, roomIds } = await this.compute(req, upto);
      const remaining = deadline - this.deps.now();
      if (!req.since || !isEmpty(response) || remaining <= 0 || req.signal?.aborted) return response;
      // Nothing new: wait for something that may concern this device, unless the
      // projections moved on while we computed (then look again at once).
      const moved = this.deps.positions();
      if (moved.rooms !== upto.rooms || moved.peeks !== upto.peeks) continue;
      const woken = await this.deps.notifier.wait({ userId: req.userId, deviceId: req.deviceId, roomIds }, remaining, req.signal);
      if (!woken) return response;
    }
  }

  private async compute(req: SyncRequest, upto: SyncPosition): Promise<{ response: SyncResponse; roomIds: string[] }> {
    const { rooms } = this.deps;
    const since = req.since;
    const now = this.deps.now();
    const response: SyncResponse = {
      next_batch: formatSyncToken(since ? { rooms: Math.max(since.rooms, upto.rooms), peeks: Math.max(since.peeks, upto.peeks) } : upto),
      rooms: { join: {}, peek: {}, leave: {}, invite: {} },
      presence: { events: [] },
      account_data: { events: [] },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
    };
    const memberships = await rooms.membershipsOf(req.userId);
    const peekRows = new Map<string, DevicePeekRow>();
    for (const row of await this.deps.peeks.ofDevice(req.userId, req.deviceId)) peekRows.set(row.roomId, row);
    const joined = memberships.filter((m) => m.membership === 'join' && m.seq <= upto.rooms);
    const joinedIds = new Set(joined.map((m) => m.roomId));

    // Incremental syncs only look at rooms with new events.
    const interesting = since
      ? await rooms.roomsWithEvents([...joinedIds, ...[...peekRows.keys()].filter((r) => !joinedIds.has(r))], since.rooms, upto.rooms)
      : new Set<string>();

    for (const m of joined) {
      const peek = peekRows.get(m.roomId);
      const newlyJoined = !since || m.seq > since.rooms;
      // The device peeked this room until the join: it has the state already.
      const wasPeeking = since !== undefined && peek !== undefined && peek.startedSeq <= since.peeks && (peek.endedSeq === null || peek.endedSeq > since.peeks);
      if (newlyJoined && !wasPeeking) {
        response.rooms.join[m.roomId] = await this.fullRoom(m.roomId, upto.rooms, req.timelineLimit, now);
      } else if (since && (interesting.has(m.roomId) || req.fullState)) {
        response.rooms.join[m.roomId] = await this.incrementalRoom(m.roomId, since.rooms, upto.rooms, req.timelineLimit, req.fullState, now);
      }
    }

    for (const [roomId, peek] of peekRows) {
      if (joinedIds.has(roomId)) continue;
      const liveAtUpto = peek.startedSeq <= upto.peeks && (peek.endedSeq === null || peek.endedSeq > upto.peeks);
      if (liveAtUpto) {
        if (!since || peek.startedSeq > since.peeks) {
          response.rooms.peek[roomId] = await this.fullRoom(roomId, upto.rooms, req.timelineLimit, now);
        } else if (interesting.has(roomId) || req.fullState) {
          response.rooms.peek[roomId] = await this.incrementalRoom(roomId, since.rooms, upto.rooms, req.timelineLimit, req.fullState, now);
        }
        continue;
      }
      const endedInWindow = since !== undefined && peek.endedSeq !== null && peek.endedSeq > since.peeks && peek.endedSeq <= upto.peeks;
      const deviceSawIt = since !== undefined && peek.startedSeq <= since.peeks;
      if (endedInWindow && deviceSawIt && peek.endReason !== 'joined') {
        response.rooms.leave[roomId] = await this.endedPeek(roomId, since.rooms, upto.rooms, req.timelineLimit, now);
      }
    }

    for (const m of memberships) {
      if (m.seq > upto.rooms || joinedIds.has(m.roomId)) continue;
      const changed = !since || m.seq > since.rooms;
      if (!changed) continue;
      if (m.membership === 'invite') {
        response.rooms.invite[m.roomId] = await this.invite(m.roomId, now);
      } else if ((m.membership === 'leave' || m.membership === 'ban') && since && !(m.roomId in response.rooms.leave)) {
        response.rooms.leave[m.roomId] = await this.leftRoom(m.roomId, since.rooms, m.seq, req.timelineLimit, now);
      }
    }
    const roomIds = [...joinedIds, ...[...peekRows.values()].filter((p) => p.endedSeq === null).map((p) => p.roomId)];
    return { response, roomIds };
  }

  private section(state: StoredEvent[], timeline: StoredEvent[], limited: boolean, prevSeq: number, now: number): RoomSection {
    return {
      state: { events: clientEvents(state, now).map(withoutRoomId) },
      timeline: { events: clientEvents(timeline, now).map(withoutRoomId), limited, prev_batch: formatTopologicalToken(prevSeq) },
      ephemeral: { events: [] },
      account_data: { events: [] },
      unread_notifications: { highlight_count: 0, notification_count: 0 },
      summary: {},
    };
  }

  /** Like a new join: the latest events, and the state before the first of them. */
  private async fullRoom(roomId: string, upto: number, limit: number, now: number): Promise<RoomSection> {
    const { events, limited } = await this.deps.rooms.timeline(roomId, 0, upto, limit);
    const first = events[0];
    const state = first ? await this.deps.rooms.stateBefore(roomId, first.seq) : await this.deps.rooms.stateBefore(roomId, upto + 1);
    return this.section(state, events, limited, first?.seq ?? upto + 1, now);
  }

  private async incrementalRoom(roomId: string, after: number, upto: number, limit: number, fullState: boolean, now: number): Promise<RoomSection> {
    const { events, limited } = await this.deps.rooms.timeline(roomId, after, upto, limit);
    const first = events[0];
    let state: StoredEvent[] = [];
    if (fullState) state = await this.deps.rooms.stateBefore(roomId, first?.seq ?? upto + 1);
    else if (limited && first) state = await this.deps.rooms.stateBefore(roomId, first.seq, after);
    return this.section(state, events, limited, first?.seq ?? upto + 1, now);
  }

  /** The events the device had not seen, up to the one that ended what a peek may see. */
  private async endedPeek(roomId: string, after: number, upto: number, limit: number, now: number): Promise<RoomSection> {
    const { events, limited } = await this.deps.rooms.timeline(roomId, after, upto, limit);
    const cut = events.findIndex((e) => endsPeekVisibility(e.pdu));
    const seen = cut >= 0 ? events.slice(0, cut + 1) : events;
    if (seen.length === 0) return {};
    return {
      state: { events: [] },
      timeline: { events: clientEvents(seen, now).map(withoutRoomId), limited, prev_batch: formatTopologicalToken(seen[0]!.seq) },
      account_data: { events: [] },
    };
  }

  private async leftRoom(roomId: string, after: number, leaveSeq: number, limit: number, now: number): Promise<RoomSection> {
    const { events, limited } = await this.deps.rooms.timeline(roomId, after, leaveSeq, limit);
    return {
      state: { events: [] },
      timeline: { events: clientEvents(events, now).map(withoutRoomId), limited, prev_batch: formatTopologicalToken(events[0]?.seq ?? leaveSeq) },
      account_data: { events: [] },
    };
  }

  private async invite(roomId: string, now: number): Promise<RoomSection> {
    const state = await this.deps.rooms.currentState(roomId);
    const stripped = clientEvents(
      state.filter((e) => ['m.room.create', 'm.room.name', 'm.room.join_rules', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.member'].includes(e.pdu.type)),
      now,
    ).map((e) => ({ type: e.type, state_key: e.state_key, content: e.content, sender: e.sender }));
    return { invite_state: { events: stripped } };
  }
}

function isEmpty(r: SyncResponse): boolean {
  const { join, peek, leave, invite } = r.rooms;
  return Object.keys(join).length + Object.keys(peek).length + Object.keys(leave).length + Object.keys(invite).length === 0;
}
