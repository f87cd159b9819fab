// /sync: joined rooms, peeked rooms (MSC2753), invites and left rooms, between two
// positions. A peek arrives like a join; an ended peek appears once under `leave`; a
// peeking user who joins moves from `peek` to `join` without the state again. A peek
// never shows an event past its horizon (the event that ended world_readable or turned
// on encryption), whichever of the two sync projections has caught up first.
import { clientEvents, type RoomReader, type StoredEvent, type TimelineSlice, type Viewer } from './roomReader.ts';
import { withoutRoomId } from './clientEvents.ts';
import type { DevicePeekRow, PeekReader } from './peekReader.ts';
import type { SyncNotifier } from './notifier.ts';
import { syncWakeupSeconds } from '../metrics.ts';
import type { SyncCache } from './syncCache.ts';
import { ImmutableReadCache } from './memo.ts';
import { formatSyncToken, formatTopologicalToken, positionOf, type SyncPosition } from './syncToken.ts';

export const DEFAULT_TIMELINE_LIMIT = 20;
export const MAX_TIMELINE_LIMIT = 1000;

/** What a /sync asks. Whatever here shapes the answer must also be in `shareKey` below. */
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

/** When and for whom a response is made (ages; the sender's own transaction IDs). */
interface View {
  now: number;
  viewer: Viewer;
  /**
   * Rooms where the user has a membership (any: join, invite, leave, ban). Elsewhere the
   * user has none, nor ever had one, and history visibility judges it as a stranger — the
   * same judgement for every such user, so it is shared (one read per room and position
   * when thousands of peeking devices wake at once).
   */
  memberOf: ReadonlySet<string>;
}

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
  /** Set where the sync projections run in this process (see syncCache.ts). */
  cache?: SyncCache;
}

export class SyncService {
  constructor(private readonly deps: SyncDeps) {}

  /** A device's peek rows (live and ended), from memory where the cache runs. */
  async devicePeeks(userId: string, deviceId: string): Promise<DevicePeekRow[]> {
    const { cache, peeks } = this.deps;
    if (!cache) return peeks.ofDevice(userId, deviceId);
    return cache.devicePeeks.get(`${userId}\u0000${deviceId}`, () => peeks.ofDevice(userId, deviceId));
  }

  /**
   * A /sync answer. Devices that ask the same question at the same positions — no
   * membership anywhere (peekers, strangers), the same `since`, filter limits and peeks —
   * get one computed answer, serialised once (`json`), however many of them a new event
   * woke at the same moment.
   */
  private closing = false;

  /** Shutdown: open long-polls answer with what they have, and new ones do not wait. */
  close(): void {
    this.closing = true;
    this.deps.notifier.releaseAll();
  }

  async sync(req: SyncRequest): Promise<SyncAnswer> {
    const deadline = this.deps.now() + req.timeoutMs;
    let wokenAt: number | undefined;
    for (;;) {
      const upto = this.deps.positions();
      const answer = await this.computeShared(req, upto);
      const remaining = deadline - this.deps.now();
      if (!req.since || !isEmpty(answer.response) || remaining <= 0 || req.signal?.aborted || this.closing) {
        if (wokenAt !== undefined) syncWakeupSeconds.observe((performance.now() - wokenAt) / 1000);
        return answer;
      }
      // Nothing new: wait for something that may concern this device, unless the
      // projections moved on while we computed (then look again at once).
      const moved = this.deps.positions();
      if (moved.rooms !== upto.rooms || moved.peeks !== upto.peeks) continue;
      const woken = await this.deps.notifier.wait({ userId: req.userId, deviceId: req.deviceId, roomIds: answer.roomIds }, remaining, req.signal);
      if (woken === false) return answer;
      wokenAt ??= woken;
    }
  }

  private async computeShared(req: SyncRequest, upto: SyncPosition): Promise<SyncAnswer> {
    const memberships = await this.membershipsOf(req.userId);
    const devicePeeks = await this.devicePeeks(req.userId, req.deviceId);
    const key = memberships.length === 0 ? shareKey(req, upto, devicePeeks) : undefined;
    if (key === undefined) return answerOf(await this.compute(req, upto, memberships, devicePeeks));
    const at = `${upto.rooms}_${upto.peeks}`;
    if (this.shared.at !== at) this.shared = { at, answers: new Map() };
    const answers = this.shared.answers;
    let shared = answers.get(key);
    if (!shared) {
      shared = this.compute(req, upto, memberships, devicePeeks).then(answerOf);
      if (answers.size < MAX_SHARED_ANSWERS) {
        answers.set(key, shared);
        shared.catch(() => answers.delete(key));
      }
    }
    return shared;
  }

  private shared: { at: string; answers: Map<string, Promise<SyncAnswer>> } = { at: '', answers: new Map() };

  private async membershipsOf(userId: string): Promise<Awaited<ReturnType<RoomReader['membershipsOf']>>> {
    const { cache, rooms } = this.deps;
    return cache
      ? ((await cache.memberships.get(userId, () => rooms.membershipsOf(userId))) as Awaited<ReturnType<RoomReader['membershipsOf']>>)
      : rooms.membershipsOf(userId);
  }

  private async compute(
    req: SyncRequest,
    upto: SyncPosition,
    memberships: Awaited<ReturnType<RoomReader['membershipsOf']>>,
    devicePeeks: DevicePeekRow[],
  ): Promise<{ response: SyncResponse; roomIds: string[] }> {
    const { rooms } = this.deps;
    const since = req.since;
    const view: View = { now: this.deps.now(), viewer: { userId: req.userId, deviceId: req.deviceId }, memberOf: new Set() };
    const response: SyncResponse = {
      next_batch: formatSyncToken(since ? { rooms: Math.max(since.rooms, upto.rooms), peeks: Math.max(since.peeks, upto.peeks) } : upto),
      rooms: { join: {}, peek: {}, leave: {}, invite: {} },
      presence: { events: [] },
      account_data: { events: [] },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
    };
    view.memberOf = new Set(memberships.map((m) => m.roomId));
    const peekRows = new Map<string, DevicePeekRow>();
    for (const row of devicePeeks) peekRows.set(row.roomId, row);
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
      const wasPeeking = newlyJoined && since !== undefined && peek !== undefined && (await this.peekedAt(peek, since));
      if (newlyJoined && !wasPeeking) {
        response.rooms.join[m.roomId] = await this.fullRoom(m.roomId, upto.rooms, req.timelineLimit, view);
      } else if (since && (interesting.has(m.roomId) || req.fullState)) {
        response.rooms.join[m.roomId] = await this.incrementalRoom(m.roomId, since.rooms, upto.rooms, req.timelineLimit, req.fullState, view);
      }
    }

    // What each peek may see ends at its horizon: the first event that took the room out
    // of world_readable (or encrypted it), even while the PEEKS projection has not yet
    // recorded the end of the peek.
    const shown = [...peekRows.values()].filter((p) => !joinedIds.has(p.roomId));
    const current = shown.filter((p) => p.endedSeq === null || since === undefined || p.endedSeq > since.peeks);
    const horizons = await rooms.peekHorizons(
      current.map((p) => ({ roomId: p.roomId, afterSeq: p.roomSeq })),
      upto.rooms,
    );
    const boundOf = (p: DevicePeekRow) => Math.min(upto.rooms, horizons.get(p.roomId) ?? Infinity);

    for (const peek of shown) {
      const roomId = peek.roomId;
      const liveAtUpto = peek.startedSeq <= upto.peeks && (peek.endedSeq === null || peek.endedSeq > upto.peeks);
      if (liveAtUpto) {
        const bound = boundOf(peek);
        if (!since || peek.startedSeq > since.peeks) {
          response.rooms.peek[roomId] = await this.fullRoom(roomId, bound, req.timelineLimit, view);
        } else if (req.fullState || (interesting.has(roomId) && bound > since.rooms)) {
          const section = await this.incrementalRoom(roomId, since.rooms, bound, req.timelineLimit, req.fullState, view);
          if (req.fullState || (section.timeline as { events: unknown[] }).events.length > 0) response.rooms.peek[roomId] = section;
        }
        continue;
      }
      const endedInWindow = since !== undefined && peek.endedSeq !== null && peek.endedSeq > since.peeks && peek.endedSeq <= upto.peeks;
      // The device saw this peek — or the one it replaced, which ended after `since`.
      const deviceSawIt =
        since !== undefined &&
        (peek.startedSeq <= since.peeks ||
          (peek.prevStartedSeq !== null && peek.prevEndedSeq !== null && peek.prevStartedSeq <= since.peeks && peek.prevEndedSeq > since.peeks));
      // A peek ended by a join shows under `join` (once the join is visible), never under `leave`.
      if (endedInWindow && deviceSawIt && peek.endReason !== 'joined') {
        response.rooms.leave[roomId] = await this.endedPeek(peek, since.rooms, boundOf(peek), req.timelineLimit, view);
      }
    }

    for (const m of memberships) {
      if (m.seq > upto.rooms || joinedIds.has(m.roomId)) continue;
      const changed = !since || m.seq > since.rooms;
      if (!changed) continue;
      if (m.membership === 'invite') {
        response.rooms.invite[m.roomId] = await this.invite(m.roomId, view);
      } else if ((m.membership === 'leave' || m.membership === 'ban') && since && !(m.roomId in response.rooms.leave)) {
        response.rooms.leave[m.roomId] = await this.leftRoom(m.roomId, since.rooms, m.seq, req.timelineLimit, view);
      }
    }
    const roomIds = [...joinedIds, ...shown.filter((p) => p.endedSeq === null).map((p) => p.roomId)];
    return { response, roomIds };
  }

  /** Where a timeline's `prev_batch` points: before its first event, or (none) the sync position. */
  private prevBatch(first: StoredEvent | undefined, upto: number): string {
    return first ? formatTopologicalToken(positionOf(first)) : formatSyncToken({ rooms: upto, peeks: 0 });
  }

  private section(state: StoredEvent[], timeline: StoredEvent[], limited: boolean, prevBatch: string, view: View): RoomSection {
    return {
      state: { events: clientEvents(state, view.now, view.viewer).map(withoutRoomId) },
      timeline: { events: clientEvents(timeline, view.now, view.viewer).map(withoutRoomId), limited, prev_batch: prevBatch },
      ephemeral: { events: [] },
      account_data: { events: [] },
      unread_notifications: { highlight_count: 0, notification_count: 0 },
      summary: {},
    };
  }

  /**
   * The timeline slice in (after, upto], less what the viewer may not see (history
   * visibility, judged at each event). `hidden` says events were left out: the state
   * section then carries what they changed.
   */
  private async visibleTimeline(roomId: string, after: number, upto: number, limit: number, view: View): Promise<TimelineSlice & { hidden: boolean }> {
    const slice = await this.deps.rooms.timeline(roomId, after, upto, limit);
    const viewer = view.memberOf.has(roomId) ? view.viewer.userId : null;
    const events = await this.deps.rooms.visibleTo(roomId, viewer, slice.events, upto);
    return { events, limited: slice.limited, hidden: events.length < slice.events.length };
  }

  /**
   * The state section for a timeline over (after, upto] (after = 0: a full room). When
   * nothing was hidden: the state before the first event (only what changed since `after`
   * for an incremental, limited timeline). When events were hidden, their state changes
   * must still reach the client: the state at `upto` (or what changed since `after`), less
   * the entries the visible timeline itself carries.
   */
  private async stateFor(roomId: string, after: number, upto: number, slice: TimelineSlice & { hidden: boolean }, fullState: boolean): Promise<StoredEvent[]> {
    const { events, limited, hidden } = slice;
    const first = events[0];
    const since = fullState ? 0 : after;
    if (hidden) {
      const inTimeline = new Set(events.map((e) => e.eventId));
      return (await this.deps.rooms.stateBefore(roomId, upto + 1, since)).filter((e) => !inTimeline.has(e.eventId));
    }
    if (since === 0) return this.deps.rooms.stateBefore(roomId, first?.seq ?? upto + 1);
    if (limited) return this.deps.rooms.stateBefore(roomId, first?.seq ?? upto + 1, since);
    return [];
  }

  /**
   * Room sections for readers with no membership in the room (peeking devices): the same
   * for every such reader at the same positions (no transaction IDs of their own, history
   * judged as a stranger's), so thousands of devices woken by one event share one.
   */
  private readonly strangerSections = new ImmutableReadCache<RoomSection>(2_000);

  private shareable(roomId: string, view: View, key: string, make: () => Promise<RoomSection>): Promise<RoomSection> {
    if (view.memberOf.has(roomId)) return make();
    return this.strangerSections.get(`${roomId}\u0000${key}`, make);
  }

  /** Like a new join: the latest events, and the state before the first of them. */
  private fullRoom(roomId: string, upto: number, limit: number, view: View): Promise<RoomSection> {
    return this.shareable(roomId, view, `full\u0000${upto}\u0000${limit}`, () => this.makeFullRoom(roomId, upto, limit, view));
  }

  private incrementalRoom(roomId: string, after: number, upto: number, limit: number, fullState: boolean, view: View): Promise<RoomSection> {
    return this.shareable(roomId, view, `inc\u0000${after}\u0000${upto}\u0000${limit}\u0000${fullState}`, () =>
      this.makeIncrementalRoom(roomId, after, upto, limit, fullState, view),
    );
  }

  private async makeFullRoom(roomId: string, upto: number, limit: number, view: View): Promise<RoomSection> {
    const slice = await this.visibleTimeline(roomId, 0, upto, limit, view);
    const state = await this.stateFor(roomId, 0, upto, slice, true);
    return this.section(state, slice.events, slice.limited, this.prevBatch(slice.events[0], upto), view);
  }

  private async makeIncrementalRoom(roomId: string, after: number, upto: number, limit: number, fullState: boolean, view: View): Promise<RoomSection> {
    const slice = await this.visibleTimeline(roomId, after, upto, limit, view);
    const state = await this.stateFor(roomId, after, upto, slice, fullState);
    return this.section(state, slice.events, slice.limited, this.prevBatch(slice.events[0], upto), view);
  }

  /**
   * The leave entry of an ended peek: the events the device had not seen, up to where the
   * peek ended (`bound` already stops at the event that ended what a peek may see; an
   * unpeek, expiry or logout has no event, so its time bounds it), `{}` when there are none.
   */
  private async endedPeek(peek: DevicePeekRow, after: number, bound: number, limit: number, view: View): Promise<RoomSection> {
    let upto = bound;
    if (peek.endedRoomSeq !== null) {
      upto = Math.min(upto, peek.endedRoomSeq); // where the room stood when the peek ended
    } else if (peek.endReason !== 'visibility_changed' && peek.endReason !== 'encrypted' && peek.endedAt !== null) {
      const endedAt = peek.endReason === 'timed_out' && peek.expiresAt !== null ? Math.min(peek.endedAt, peek.expiresAt) : peek.endedAt;
      upto = Math.min(upto, await this.deps.rooms.lastSeqAtOrBefore(peek.roomId, after, bound, endedAt));
    }
    if (upto <= after) return {};
    const { events, limited } = await this.visibleTimeline(peek.roomId, after, upto, limit, view);
    if (events.length === 0) return {};
    return {
      state: { events: [] },
      timeline: { events: clientEvents(events, view.now, view.viewer).map(withoutRoomId), limited, prev_batch: this.prevBatch(events[0], upto) },
      account_data: { events: [] },
    };
  }

  /**
   * Whether the device had this room as a peek at `since`: its peek had started and not
   * ended then — or had ended because the user joined, while the join itself was not yet
   * part of `since` (the PEEKS projection can commit before the ROOMS one does).
   */
  private async peekedAt(peek: DevicePeekRow, since: SyncPosition): Promise<boolean> {
    if (peek.startedSeq > since.peeks) return false;
    if (peek.endedSeq === null || peek.endedSeq > since.peeks) return true;
    if (peek.endReason !== 'joined') return false;
    return !(await this.deps.rooms.joinedBetween(peek.roomId, peek.userId, peek.roomSeq, since.rooms));
  }

  private async leftRoom(roomId: string, after: number, leaveSeq: number, limit: number, view: View): Promise<RoomSection> {
    const slice = await this.visibleTimeline(roomId, after, leaveSeq, limit, view);
    const state = await this.stateFor(roomId, after, leaveSeq, slice, false);
    return {
      state: { events: clientEvents(state, view.now, view.viewer).map(withoutRoomId) },
      timeline: { events: clientEvents(slice.events, view.now, view.viewer).map(withoutRoomId), limited: slice.limited, prev_batch: this.prevBatch(slice.events[0], leaveSeq) },
      account_data: { events: [] },
    };
  }

  private async invite(roomId: string, view: View): Promise<RoomSection> {
    const state = await this.deps.rooms.currentState(roomId);
    const stripped = clientEvents(
      state.filter((e) => ['m.room.create', 'm.room.name', 'm.room.join_rules', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.member'].includes(e.pdu.type)),
      view.now,
    ).map((e) => ({ type: e.type, state_key: e.state_key, content: e.content, sender: e.sender }));
    return { invite_state: { events: stripped } };
  }
}

function isEmpty(r: SyncResponse): boolean {
  const { join, peek, leave, invite } = r.rooms;
  return Object.keys(join).length + Object.keys(peek).length + Object.keys(leave).length + Object.keys(invite).length === 0;
}

/** A /sync answer: the response, the rooms to wait on, and its UTF-8 JSON body (made once, on first use). */
export interface SyncAnswer {
  response: SyncResponse;
  roomIds: string[];
  body(): Buffer;
}

/** Distinct shared answers kept for one position; past this, answers are computed per request. */
const MAX_SHARED_ANSWERS = 10_000;

function answerOf(computed: { response: SyncResponse; roomIds: string[] }): SyncAnswer {
  let body: Buffer | undefined;
  return { ...computed, body: () => (body ??= Buffer.from(JSON.stringify(computed.response))) };
}

/**
 * What a membership-less device's answer depends on besides the positions: its `since`,
 * the filter's limits, and its peek rows — of which only how each start and end falls
 * against `since` and `upto` (devices that began peeking at different moments get the
 * same answer), where the room stood (`roomSeq`, for the peek's horizon) and, for a peek
 * that ended in the window, how it ended. Its user and device IDs do not show in it: a
 * reader with no membership sent none of the events, so no transaction ID is its own.
 */
function shareKey(req: SyncRequest, upto: SyncPosition, peeks: DevicePeekRow[]): string {
  const since = req.since;
  // Against both positions (since may be past upto when processes differ in how far they are).
  const at = (seq: number | null) => (seq === null ? 'n' : `${since && seq <= since.peeks ? 'b' : 'B'}${seq <= upto.peeks ? 'u' : 'U'}`);
  const parts: (string | number)[] = [since ? `${since.rooms}_${since.peeks}` : '-', req.timelineLimit, req.fullState ? 1 : 0];
  const rows = peeks.length > 1 ? [...peeks].sort((x, y) => (x.roomId < y.roomId ? -1 : x.roomId > y.roomId ? 1 : 0)) : peeks;
  for (const p of rows) {
    const ended = at(p.endedSeq);
    const sawPrevious = since !== undefined && p.prevStartedSeq !== null && p.prevEndedSeq !== null && p.prevStartedSeq <= since.peeks && p.prevEndedSeq > since.peeks;
    parts.push(p.roomId, at(p.startedSeq), ended, p.roomSeq, sawPrevious ? 1 : 0);
    if (ended === 'Bu') parts.push(p.endReason ?? '', p.endedRoomSeq ?? '', p.endedAt ?? '', p.expiresAt ?? '');
  }
  return parts.join('\u0000');
}
