// /sync: joined rooms, peeked rooms (MSC2753), invites and left rooms, between two
// positions. A peek arrives like a join; an ended peek appears once under `leave`; a
// peeking user who joins moves from `peek` to `join` without the state again. A peek
// never shows an event past its horizon (the event that ended world_readable or turned
// on encryption), whichever of the two sync projections has caught up first. Presence and
// account data (src/syncapi/clientData.ts) ride along by their own position, and the
// sync filter's sections and limits shape each part (src/syncapi/syncFilter.ts).
import { clientEvents, type RoomReader, type StoredEvent, type TimelineSlice, type Viewer } from './roomReader.ts';
import { withoutRoomId } from './clientEvents.ts';
import type { DevicePeekRow, PeekReader } from './peekReader.ts';
import type { SyncNotifier } from './notifier.ts';
import { syncWakeupSeconds } from '../metrics.ts';
import { deviceKey, devicePeekEntry, liveRows, mattersAfter, type DevicePeekEntry, type SyncCache } from './syncCache.ts';
import { ImmutableReadCache } from './memo.ts';
import { formatSyncToken, formatTopologicalToken, positionOf, type SyncPosition, type SyncTokenPosition } from './syncToken.ts';
import { ClientDataStore, presenceContent, receiptContent, type AccountDataRow, type PresenceState, type ReceiptRow } from './clientData.ts';
import { applyFilter, keeps, keepsRoom, selects, syncFilterOf, type SyncFilter } from './syncFilter.ts';
import type { Hangup } from './hangup.ts';
import { roomSummary, type RoomSummary } from './roomSummary.ts';
import { newLazySeq, SentMembers } from './sentMembers.ts';

export { DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT } from './syncFilter.ts';

/**
 * With roles split, how often a process re-reads the client-data position while it holds
 * long-polls: a presence or account data change taken by another process reaches them
 * within this (see SyncService.clientDataPosition).
 */
export const CLIENT_DATA_POLL_MS = 1_000;

/** What a /sync asks. Whatever here shapes the answer must also be in `shareKey` below. */
export interface SyncRequest {
  userId: string;
  deviceId: string;
  since?: SyncTokenPosition;
  timeoutMs: number;
  fullState: boolean;
  timelineLimit: number;
  /** The sync filter (syncFilterOf); absent: none. Its timeline limit is `timelineLimit`. */
  filter?: SyncFilter;
  /** The client going away ends the long-poll. */
  signal?: Hangup;
}

/** What the room part of an answer computed, for the per-user part (client data) to build on. */
interface Computed {
  response: SyncResponse;
  /** Rooms to wait on: joined rooms and live peeks (also the rooms that may carry account data). */
  roomIds: string[];
  joinedIds: string[];
  /** Rooms shown as if new (initial sync, a new join or peek): all of their account data goes with them. */
  fullRooms: string[];
  /** Joined rooms new to this device since `since` (their members' presence goes with them). */
  newlyJoined: string[];
}

const NO_FILTER = syncFilterOf(null);

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
  /** The sync filter: which events each section keeps. */
  filter: SyncFilter;
  /**
   * A lazy-loading reader's sync sequence (sentMembers.ts): what its member rooms' sections
   * send is remembered under it, and not sent again. Absent for everyone else (peekers'
   * sections are shared), and with `include_redundant_members`.
   */
  lazySeq?: string;
  /** The answer's ROOMS position (its next_batch): where the device syncs from once it has the answer. */
  answerPos: number;
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
  /** Presence and account data; default: read from the rooms reader's database. */
  clientData?: ClientDataStore;
}

export class SyncService {
  /** Presence and account data: the HTTP handlers write through setPresence and putAccountData below. */
  readonly clientData: ClientDataStore;
  /** The member events each device has been sent (lazy-loaded members). */
  private readonly sentMembers = new SentMembers();

  constructor(private readonly deps: SyncDeps) {
    this.clientData = deps.clientData ?? new ClientDataStore(deps.rooms.db);
  }

  /**
   * The client-data position: the highest client_data_stream value known to be committed
   * with every value below it (clientData.ts). All roles in one process (where the sync
   * cache runs), every write passes through this process and reports its value
   * (clientDataCommitted): the database is read once, at the first /sync. With roles split,
   * a write may be taken by another process, which has no way to tell this one (the
   * notifier hears of room events through the projections' NATS wake-ups; client data
   * does not go through a projection): the position is re-read at most every
   * CLIENT_DATA_POLL_MS, and while long-polls wait a timer does so and wakes the users
   * the changes concern. So with roles split a change made through another process reaches
   * a waiting long-poll within about that interval, and a /sync that starts right after a
   * write through another process may see it only in its next answer.
   */
  private clientDataKnown: number | undefined;
  private clientDataReadAt = -Infinity;
  private clientDataReading: Promise<number> | undefined;
  private clientDataPoller: NodeJS.Timeout | undefined;
  private clientDataPolledUpTo: number | undefined;

  private clientDataPosition(): number | Promise<number> {
    const known = this.clientDataKnown;
    if (known !== undefined && (this.deps.cache || performance.now() - this.clientDataReadAt < CLIENT_DATA_POLL_MS)) return known;
    return this.readClientDataPosition();
  }

  private readClientDataPosition(): Promise<number> {
    this.clientDataReading ??= this.clientData
      .position()
      .then((p) => {
        this.userChangesFrom ??= p;
        this.clientDataKnown = Math.max(this.clientDataKnown ?? 0, p);
        this.clientDataReadAt = performance.now();
        return this.clientDataKnown;
      })
      .finally(() => (this.clientDataReading = undefined));
    return this.clientDataReading;
  }

  /** A client-data write committed with `streamId`: later /syncs answer up to it, and these users' and rooms' long-polls wake. */
  private clientDataCommitted(streamId: number, users: Iterable<string>, rooms: Iterable<string> = []): void {
    this.clientDataKnown = Math.max(this.clientDataKnown ?? 0, streamId);
    if (this.userChanges.size >= MAX_TRACKED_USERS) {
      this.userChanges.clear();
      this.userChangesFrom = this.clientDataKnown;
    }
    for (const u of users) this.userChanges.set(u, streamId);
    this.deps.notifier.onClientData(users, rooms);
  }

  /**
   * All roles in one process (every client-data write passes through here): the latest
   * client-data value that concerned each user (their account data, their own or a
   * room-mate's presence), for changes after `userChangesFrom`. A device with no joined
   * room is concerned by nothing else, so it can tell without a query whether the client
   * data that moved since its last sync (someone's typing, somewhere) is any of its business.
   */
  private readonly userChanges = new Map<string, number>();
  private userChangesFrom: number | undefined;

  /** Whether client data changed in (since, upto] may concern this answer's device. */
  private clientDataConcerns(req: SyncRequest, upto: SyncTokenPosition, computed: Computed): boolean {
    const after = req.since?.clientData ?? 0;
    if (after >= upto.clientData) return false;
    if (computed.joinedIds.length > 0 || !this.deps.cache || this.userChangesFrom === undefined || after < this.userChangesFrom) return true;
    return (this.userChanges.get(req.userId) ?? 0) > after;
  }

  /** The client-data position a read made now answers up to (the legacy /events of a room preview). */
  async clientDataNow(): Promise<number> {
    const p = this.clientDataPosition();
    return typeof p === 'number' ? p : await p;
  }

  /** Roles split: while long-polls wait here, notice client-data changes other processes took (see clientDataPosition). */
  private pollClientData(): void {
    if (this.deps.cache || this.clientDataPoller || this.closing) return;
    this.clientDataPoller = setInterval(() => {
      if (this.deps.notifier.waiting === 0) return;
      void (async () => {
        // From the position the first long-poll waited at: later waits that saw less find
        // the position moved (clientDataKnown) before they wait, and look again.
        const before = this.clientDataPolledUpTo ?? 0;
        const now = await this.readClientDataPosition();
        if (now <= before) return;
        this.clientDataPolledUpTo = now;
        const concerned = await this.clientData.concernedBy(before, now);
        this.deps.notifier.onClientData(concerned.users, concerned.rooms);
      })().catch(() => {
        // The database is away: the long-polls see the change at their next wake or sync.
      });
    }, CLIENT_DATA_POLL_MS);
    this.clientDataPoller.unref();
  }

  /** Sets the user's presence (PUT /presence/{userId}/status); wakes them and everyone sharing a room with them. */
  async setPresence(userId: string, state: PresenceState, statusMsg: string | null): Promise<void> {
    const streamId = await this.clientData.setPresence(userId, state, statusMsg, this.deps.now());
    if (streamId === null) return;
    const rooms = (await this.deps.rooms.membershipsOf(userId)).filter((m) => m.membership === 'join').map((m) => m.roomId);
    this.clientDataCommitted(streamId, await this.clientData.usersSharingARoom(userId), rooms);
  }

  /** Stores a receipt (POST /rooms/{roomId}/receipt/…) and wakes the long-polls of the room. */
  async putReceipt(receipt: Omit<ReceiptRow, 'streamId' | 'ts'>): Promise<void> {
    this.sweepLapsedTyping();
    const streamId = await this.clientData.putReceipt({ ...receipt, ts: this.deps.now() });
    if (streamId !== null) this.clientDataCommitted(streamId, [], [receipt.roomId]);
  }

  /**
   * A spell whose process stopped before its timer fired would count as over for every
   * reader but never tell a long-poll so. Every TYPING_SWEEP_MS, from this process's first
   * /sync, receipt or typing notification on, it writes the end of such spells (any process
   * may: the write is conditional and ordered by the client-data lock).
   */
  private typingSweeper: NodeJS.Timeout | undefined;
  private sweepLapsedTyping(): void {
    if (this.typingSweeper || this.closing) return;
    const sweep = () =>
      this.clientData
        .endLapsedTyping(this.deps.now())
        .then((ended) => {
          if (ended) this.clientDataCommitted(ended.streamId, [], ended.rooms);
        })
        .catch(() => {
          // The database is away: the next sweep writes them.
        });
    void sweep();
    this.typingSweeper = setInterval(() => void sweep(), TYPING_SWEEP_MS);
    this.typingSweeper.unref();
  }

  /** Typing spells whose end this process will write (see setTyping), by room and user. */
  private readonly typingTimers = new Map<string, NodeJS.Timeout>();

  /**
   * Starts (`timeoutMs` > 0) or stops (0) `userId` typing in a room, and wakes the room's
   * long-polls. The process that starts a spell writes its end when the time runs out, so
   * long-polls learn of it; readers never count a spell past its end either way (a process
   * that stops first leaves a spell that lists nobody once it is over).
   */
  async setTyping(roomId: string, userId: string, timeoutMs: number): Promise<void> {
    this.sweepLapsedTyping();
    const key = `${roomId}\u0000${userId}`;
    clearTimeout(this.typingTimers.get(key));
    this.typingTimers.delete(key);
    const now = this.deps.now();
    const until = timeoutMs > 0 ? now + timeoutMs : 0;
    const streamId = await this.clientData.setTyping(roomId, userId, until, now);
    if (streamId !== null) this.clientDataCommitted(streamId, [], [roomId]);
    if (until === 0 || this.closing) return;
    const timer = setTimeout(() => {
      if (this.typingTimers.get(key) === timer) this.typingTimers.delete(key);
      void this.clientData
        .typingEnded(roomId, userId, until)
        .then((ended) => {
          if (ended !== null) this.clientDataCommitted(ended, [], [roomId]);
        })
        .catch(() => {
          // The database is away: the spell still counts as over for every reader.
        });
    }, timeoutMs);
    timer.unref();
    this.typingTimers.set(key, timer);
  }

  /** Stores account data (roomId '' for global) and wakes the user's long-polls. */
  async putAccountData(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
    const streamId = await this.clientData.putAccountData(userId, roomId, type, content);
    this.clientDataCommitted(streamId, [userId]);
  }

  /**
   * A device's peek rows that a sync at PEEKS positions past `endedAfter` can show: the
   * live ones, those that ended after it, and those a join ended (`mattersAfter`). From
   * memory where the cache runs and holds them (a `since` older than what it keeps reads
   * the table), so what a device peeked long ago costs its syncs nothing.
   */
  async devicePeeks(userId: string, deviceId: string, endedAfter: number): Promise<readonly DevicePeekRow[]> {
    const { cache, peeks } = this.deps;
    const rows = cache && rowsAfter(await this.loadPeekEntry(cache, userId, deviceId), endedAfter);
    return rows ?? peeks.ofDeviceAfter(userId, deviceId, endedAfter);
  }

  /** devicePeeks when the cache holds them (undefined otherwise): no promise, no wait. */
  private devicePeeksNow(userId: string, deviceId: string, endedAfter: number): readonly DevicePeekRow[] | undefined {
    const entry = this.peekEntryNow(userId, deviceId);
    return entry && rowsAfter(entry, endedAfter);
  }

  /** A device's live peek rows, from memory where the cache runs. */
  async liveDevicePeeks(userId: string, deviceId: string): Promise<readonly DevicePeekRow[]> {
    const { cache, peeks } = this.deps;
    if (!cache) return peeks.liveOfDevice(userId, deviceId);
    return this.liveDevicePeeksNow(userId, deviceId) ?? liveRows(await this.loadPeekEntry(cache, userId, deviceId));
  }

  /** liveDevicePeeks when the cache holds them (undefined otherwise). */
  liveDevicePeeksNow(userId: string, deviceId: string): readonly DevicePeekRow[] | undefined {
    const entry = this.peekEntryNow(userId, deviceId);
    return entry && liveRows(entry);
  }

  /** The device's cache entry when the cache holds it. */
  private peekEntryNow(userId: string, deviceId: string): DevicePeekEntry | undefined {
    return this.deps.cache?.devicePeeks.peek(deviceKey(userId, deviceId));
  }

  /** The device's cache entry, loaded from the table (and pruned) when the cache does not hold it. */
  private loadPeekEntry(cache: SyncCache, userId: string, deviceId: string): Promise<DevicePeekEntry> {
    return cache.devicePeeks.get(deviceKey(userId, deviceId), async () => devicePeekEntry(await this.deps.peeks.ofDevice(userId, deviceId)));
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
    clearInterval(this.clientDataPoller);
    clearInterval(this.typingSweeper);
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
    this.typingTimers.clear();
    this.deps.notifier.releaseAll();
  }

  /** Committed positions of the sync projections: what a read sees now. */
  positions(): SyncPosition {
    return this.deps.positions();
  }

  /**
   * For long-polls other than /sync (the legacy /events of a room preview): waits as /sync
   * does until something may concern this device or these rooms, with when the waking
   * batch was committed; false on timeout or abort, and at once when shutting down.
   */
  waitForNews(interest: Parameters<SyncNotifier['wait']>[0], timeoutMs: number, signal?: Hangup): Promise<number | false> {
    if (this.closing || signal?.aborted) return Promise.resolve(false);
    // Roles split: client data written through another process wakes this wait too (from
    // the position known now; a process that has read none yet starts from the next read).
    if (this.clientDataPolledUpTo === undefined && this.clientDataKnown !== undefined) this.clientDataPolledUpTo = this.clientDataKnown;
    if (this.clientDataPolledUpTo !== undefined) this.pollClientData();
    return this.deps.notifier.wait(interest, timeoutMs, signal);
  }

  async sync(req: SyncRequest): Promise<SyncAnswer> {
    if (!this.typingSweeper) this.sweepLapsedTyping();
    const deadline = this.deps.now() + req.timeoutMs;
    let wokenAt: number | undefined;
    for (;;) {
      const clientData = this.clientDataPosition();
      const upto: SyncTokenPosition = { ...this.deps.positions(), clientData: typeof clientData === 'number' ? clientData : await clientData };
      // A device woken with thousands of others mostly finds its answer computed already.
      const answer = this.sharedNow(req, upto) ?? (await this.computeShared(req, upto));
      const remaining = deadline - this.deps.now();
      if (!req.since || !isEmpty(answer.response) || remaining <= 0 || req.signal?.aborted || this.closing) {
        if (wokenAt !== undefined) syncWakeupSeconds.observe((performance.now() - wokenAt) / 1000);
        return answer;
      }
      // Nothing new: wait for something that may concern this device, unless the
      // projections moved on while we computed (then look again at once).
      const moved = this.deps.positions();
      if (moved.rooms !== upto.rooms || moved.peeks !== upto.peeks || (this.clientDataKnown ?? 0) > upto.clientData) continue;
      this.clientDataPolledUpTo ??= upto.clientData;
      this.pollClientData();
      const woken = await this.deps.notifier.wait({ userId: req.userId, deviceId: req.deviceId, roomIds: answer.roomIds, clientDataRoomIds: answer.joinedIds }, remaining, req.signal);
      if (woken === false) return answer;
      wokenAt ??= woken;
    }
  }

  /**
   * The room part is shared between membership-less devices asking the same question;
   * the client data (presence, account data) is the user's own, laid over it when there is any.
   */
  private async computeShared(req: SyncRequest, upto: SyncTokenPosition): Promise<SyncAnswer> {
    const memberships = this.membershipsNow(req.userId) ?? (await this.membershipsOf(req.userId));
    const endedAfter = endedAfterOf(req, upto);
    const devicePeeks = this.devicePeeksNow(req.userId, req.deviceId, endedAfter) ?? (await this.devicePeeks(req.userId, req.deviceId, endedAfter));
    const key = memberships.length === 0 ? shareKey(req, upto, devicePeeks) : undefined;
    if (key === undefined) {
      const computed = await this.compute(req, upto, memberships, devicePeeks);
      return answerOf(this.needsClientData(req, upto, computed) ? await this.withClientData(req, upto, computed) : computed);
    }
    const at = sharedAt(upto);
    if (this.shared.at !== at) this.shared = { at, answers: new Map(), ready: new Map() };
    const { answers, ready } = this.shared;
    let shared = answers.get(key);
    if (!shared) {
      const keep = answers.size < MAX_SHARED_ANSWERS;
      shared = this.compute(req, upto, memberships, devicePeeks).then((c) => {
        const answer = { ...answerOf(c), computed: c };
        if (keep) ready.set(key, answer);
        return answer;
      });
      if (keep) {
        answers.set(key, shared);
        shared.catch(() => answers.delete(key));
      }
    }
    const answer = ready.get(key) ?? (await shared);
    if (!this.needsClientData(req, upto, answer.computed)) return answer;
    const own = await this.withClientData(req, upto, answer.computed);
    return own === answer.computed ? answer : answerOf(own);
  }

  /**
   * computeShared's answer when everything it needs is at hand — the user's memberships
   * (none) and the device's peeks in the cache, the shared answer computed, no client data
   * to lay over it — and undefined otherwise (then computeShared works it out).
   */
  private sharedNow(req: SyncRequest, upto: SyncTokenPosition): SyncAnswer | undefined {
    const memberships = this.membershipsNow(req.userId);
    if (memberships === undefined || memberships.length > 0) return undefined;
    const devicePeeks = this.devicePeeksNow(req.userId, req.deviceId, endedAfterOf(req, upto));
    if (devicePeeks === undefined) return undefined;
    if (this.shared.at !== sharedAt(upto)) return undefined;
    const answer = this.shared.ready.get(shareKey(req, upto, devicePeeks));
    return answer && !this.needsClientData(req, upto, answer.computed) ? answer : undefined;
  }

  private shared: { at: string; answers: Map<string, Promise<SharedAnswer>>; ready: Map<string, SharedAnswer> } = { at: '', answers: new Map(), ready: new Map() };

  /** Whether withClientData would add anything to `computed` (presence, account data). */
  private needsClientData(req: SyncRequest, upto: SyncTokenPosition, computed: Computed): boolean {
    const filter = req.filter ?? NO_FILTER;
    if (this.clientDataConcerns(req, upto, computed)) return true;
    if (computed.fullRooms.some((r) => keepsRoom(filter.roomAccountData, r))) return true;
    // A joined room shown as new carries its receipts and who is typing.
    if (computed.joinedIds.length > 0 && computed.fullRooms.length > 0 && (keeps(filter.ephemeral, 'm.receipt') || keeps(filter.ephemeral, 'm.typing'))) return true;
    return req.since !== undefined && computed.newlyJoined.length > 0 && keeps(filter.presence, 'm.presence');
  }

  /**
   * The computed answer with the user's presence and account data laid over it (the same
   * object when there are none): changed in (since, upto] of the client-data positions; all
   * of it on an initial sync; and with a room shown as new, all of its account data and the
   * presence of its members. Its callers ask needsClientData first: no promise when not.
   */
  private async withClientData(req: SyncRequest, upto: SyncTokenPosition, computed: Computed): Promise<Computed> {
    const filter = req.filter ?? NO_FILTER;
    const after = req.since?.clientData ?? 0;
    const window = after < upto.clientData;
    const fullRooms = computed.fullRooms.filter((r) => keepsRoom(filter.roomAccountData, r));
    const newMates = req.since && computed.newlyJoined.length > 0 && keeps(filter.presence, 'm.presence') ? computed.newlyJoined : [];
    const now = this.deps.now();

    // Presence: of the users sharing a room and the user themselves; the sender is the user.
    let presence: unknown[] = [];
    if (keeps(filter.presence, 'm.presence') && (window || newMates.length > 0)) {
      const mates = newMates.length > 0 ? [...new Set((await Promise.all(newMates.map((r) => this.deps.rooms.joinedMembers(r)))).flat())] : [];
      const rows = await this.clientData.presenceChanges(req.userId, after, upto.clientData, mates);
      presence = applyFilter(
        filter.presence,
        rows,
        () => 'm.presence',
        (r) => r.userId,
      ).map((r) => ({ type: 'm.presence', sender: r.userId, content: presenceContent(r, now) }));
    }

    // Account data: global, and per room for the rooms this answer may show (joined, peeked).
    const rows: AccountDataRow[] = [];
    if (window) rows.push(...(await this.clientData.accountDataChanges(req.userId, after, upto.clientData)));
    if (fullRooms.length > 0) rows.push(...(await this.clientData.roomAccountData(req.userId, fullRooms, upto.clientData)));
    const latest = new Map<string, AccountDataRow>(); // one event per (room, type): the newest
    for (const r of rows) {
      const k = `${r.roomId}\u0000${r.type}`;
      if ((latest.get(k)?.streamId ?? -1) < r.streamId) latest.set(k, r);
    }
    const visible = new Set(computed.roomIds);
    const global: AccountDataRow[] = [];
    const perRoom = new Map<string, AccountDataRow[]>();
    for (const r of [...latest.values()].sort((x, y) => x.streamId - y.streamId)) {
      if (r.roomId === '') global.push(r);
      else if (visible.has(r.roomId) && keepsRoom(filter.roomAccountData, r.roomId)) perRoom.set(r.roomId, [...(perRoom.get(r.roomId) ?? []), r]);
    }
    const event = (r: AccountDataRow) => ({ type: r.type, content: r.content });
    const accountData = applyFilter(filter.accountData, global, (r) => r.type).map(event);
    const roomEvents = new Map<string, unknown[]>();
    for (const [roomId, list] of perRoom) {
      const kept = applyFilter(filter.roomAccountData, list, (r) => r.type);
      if (kept.length > 0) roomEvents.set(roomId, kept.map(event));
    }
    const ephemeral = await this.ephemeralOf(req, upto, computed, now);
    if (presence.length === 0 && accountData.length === 0 && roomEvents.size === 0 && ephemeral.size === 0) return computed;

    const base = computed.response;
    const response: SyncResponse = {
      ...base,
      rooms: { ...base.rooms, join: { ...base.rooms.join }, peek: { ...base.rooms.peek } },
      presence: { events: presence },
      account_data: { events: accountData },
    };
    const joined = new Set(computed.joinedIds);
    const sectionOf = (roomId: string) => {
      const section = joined.has(roomId) ? response.rooms.join : response.rooms.peek;
      // A room with nothing else new still shows, for its account data or ephemeral events.
      const existing =
        section[roomId] ??
        this.section([], [], false, formatSyncToken({ rooms: upto.rooms, peeks: 0 }), {
          now,
          viewer: { userId: req.userId, deviceId: req.deviceId },
          memberOf: new Set(),
          filter,
          answerPos: upto.rooms,
        });
      return { section, existing };
    };
    for (const [roomId, events] of roomEvents) {
      const { section, existing } = sectionOf(roomId);
      section[roomId] = { ...existing, account_data: { events } };
    }
    for (const [roomId, events] of ephemeral) {
      const { section, existing } = sectionOf(roomId);
      section[roomId] = { ...existing, ephemeral: { events } };
    }
    return { ...computed, response };
  }

  /**
   * The ephemeral events of the joined rooms this answer shows: m.receipt with the receipts
   * changed in (since, upto] (all of them for a room shown as new; a private receipt only
   * to its owner), m.typing with who types now where the list changed (for a room shown as
   * new, where someone types). Receipts and typing are for members: peeked rooms get none.
   */
  private async ephemeralOf(req: SyncRequest, upto: SyncTokenPosition, computed: Computed, now: number): Promise<Map<string, unknown[]>> {
    const filter = req.filter ?? NO_FILTER;
    const out = new Map<string, unknown[]>();
    const joined = computed.joinedIds.filter((r) => keepsRoom(filter.ephemeral, r));
    if (joined.length === 0) return out;
    const after = req.since?.clientData ?? 0;
    const full = new Set(computed.fullRooms);
    const fullJoined = joined.filter((r) => full.has(r));
    const rest = joined.filter((r) => !full.has(r));
    const add = (roomId: string, event: unknown) => out.set(roomId, [...(out.get(roomId) ?? []), event]);
    if (keeps(filter.ephemeral, 'm.receipt')) {
      const rows = [...(await this.clientData.receiptsOf(fullJoined, req.userId, null, upto.clientData)), ...(await this.clientData.receiptsOf(rest, req.userId, after, upto.clientData))];
      const byRoom = new Map<string, ReceiptRow[]>();
      for (const r of rows) byRoom.set(r.roomId, [...(byRoom.get(r.roomId) ?? []), r]);
      for (const [roomId, list] of byRoom) add(roomId, { type: 'm.receipt', content: receiptContent(list) });
    }
    if (keeps(filter.ephemeral, 'm.typing')) {
      const lists = new Map([...(await this.clientData.typingOf(fullJoined, null, upto.clientData, now)), ...(await this.clientData.typingOf(rest, after, upto.clientData, now))]);
      for (const [roomId, userIds] of lists) add(roomId, { type: 'm.typing', content: { user_ids: userIds } });
    }
    if (filter.ephemeral.limit !== undefined) for (const [roomId, events] of out) out.set(roomId, events.slice(0, filter.ephemeral.limit));
    return out;
  }

  /** membershipsOf when the cache holds them (undefined otherwise). */
  private membershipsNow(userId: string): Awaited<ReturnType<RoomReader['membershipsOf']>> | undefined {
    return this.deps.cache?.memberships.peek(userId) as Awaited<ReturnType<RoomReader['membershipsOf']>> | undefined;
  }

  private async membershipsOf(userId: string): Promise<Awaited<ReturnType<RoomReader['membershipsOf']>>> {
    const { cache, rooms } = this.deps;
    return cache ? ((await cache.memberships.get(userId, () => rooms.membershipsOf(userId))) as Awaited<ReturnType<RoomReader['membershipsOf']>>) : rooms.membershipsOf(userId);
  }

  private async compute(req: SyncRequest, upto: SyncTokenPosition, memberships: Awaited<ReturnType<RoomReader['membershipsOf']>>, devicePeeks: readonly DevicePeekRow[]): Promise<Computed> {
    const { rooms } = this.deps;
    const since = req.since;
    const answerPos = since ? Math.max(since.rooms, upto.rooms) : upto.rooms;
    const view: View = {
      now: this.deps.now(),
      viewer: { userId: req.userId, deviceId: req.deviceId },
      memberOf: new Set(memberships.map((m) => m.roomId)),
      filter: req.filter ?? NO_FILTER,
      answerPos,
    };
    const { lazyLoadMembers, includeRedundantMembers } = view.filter.state;
    // A lazy-loading member's sequence goes on (the answer it syncs from has arrived), or (an
    // initial sync, or one that was not lazy) starts.
    if (lazyLoadMembers && !includeRedundantMembers && memberships.length > 0) {
      view.lazySeq = since?.lazySeq ?? newLazySeq();
      if (since?.lazySeq !== undefined) this.sentMembers.syncedFrom(view.viewer, since.lazySeq, since.rooms);
    }
    const fullRooms: string[] = [];
    const newlyJoinedIds: string[] = [];
    const response: SyncResponse = {
      next_batch: formatSyncToken({
        ...(since ? { rooms: Math.max(since.rooms, upto.rooms), peeks: Math.max(since.peeks, upto.peeks), clientData: Math.max(since.clientData, upto.clientData) } : upto),
        lazySeq: view.lazySeq,
      }),
      rooms: { join: {}, peek: {}, leave: {}, invite: {} },
      presence: { events: [] },
      account_data: { events: [] },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
    };
    // The filter's room lists leave rooms out of the response altogether (and out of what
    // a long-poll waits for); a device's peek of a left-out room goes on all the same.
    const wanted = (roomId: string) => keepsRoom(view.filter.room, roomId);
    const peekRows = new Map<string, DevicePeekRow>();
    for (const row of devicePeeks) if (wanted(row.roomId)) peekRows.set(row.roomId, row);
    const joined = memberships.filter((m) => m.membership === 'join' && m.seq <= upto.rooms && wanted(m.roomId));
    const joinedIds = new Set(joined.map((m) => m.roomId));

    // Incremental syncs only look at rooms with new events.
    const interesting = since ? await rooms.roomsWithEvents([...joinedIds, ...[...peekRows.keys()].filter((r) => !joinedIds.has(r))], since.rooms, upto.rooms) : new Set<string>();

    for (const m of joined) {
      const peek = peekRows.get(m.roomId);
      const newlyJoined = !since || m.seq > since.rooms;
      // The device peeked this room until the join: it has the state already.
      const wasPeeking = newlyJoined && since !== undefined && peek !== undefined && (await this.peekedAt(peek, since));
      if (newlyJoined && !wasPeeking) {
        response.rooms.join[m.roomId] = await this.fullRoom(m.roomId, upto.rooms, req.timelineLimit, view);
        fullRooms.push(m.roomId);
        newlyJoinedIds.push(m.roomId);
      } else if (since && (interesting.has(m.roomId) || req.fullState)) {
        const section = await this.incrementalRoom(m.roomId, since.rooms, upto.rooms, req.timelineLimit, req.fullState, view);
        // Events the filter left out (or history visibility hid) with nothing else to show: no entry.
        if (req.fullState || hasEvents(section)) response.rooms.join[m.roomId] = section;
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
          fullRooms.push(roomId);
        } else if (req.fullState || (interesting.has(roomId) && bound > since.rooms)) {
          const section = await this.incrementalRoom(roomId, since.rooms, bound, req.timelineLimit, req.fullState, view);
          if (req.fullState || hasEvents(section)) response.rooms.peek[roomId] = section;
        }
        continue;
      }
      const endedInWindow = since !== undefined && peek.endedSeq !== null && peek.endedSeq > since.peeks && peek.endedSeq <= upto.peeks;
      // The device saw this peek — or the one it replaced, which ended after `since`.
      const deviceSawIt =
        since !== undefined &&
        (peek.startedSeq <= since.peeks || (peek.prevStartedSeq !== null && peek.prevEndedSeq !== null && peek.prevStartedSeq <= since.peeks && peek.prevEndedSeq > since.peeks));
      // A peek ended by a join shows under `join` (once the join is visible), never under `leave`.
      // One that began and ended since the device last synced shows as well, from the room's
      // start (the device has nothing of the room yet).
      if (endedInWindow && peek.endReason !== 'joined') {
        response.rooms.leave[roomId] = await this.endedPeek(peek, deviceSawIt ? since.rooms : 0, boundOf(peek), req.timelineLimit, view);
      }
    }

    for (const m of memberships) {
      if (m.seq > upto.rooms || joinedIds.has(m.roomId) || !wanted(m.roomId)) continue;
      const changed = !since || m.seq > since.rooms;
      if (!changed) continue;
      if (m.membership === 'invite') {
        response.rooms.invite[m.roomId] = await this.invite(m.roomId, view);
      } else if ((m.membership === 'leave' || m.membership === 'ban') && (since || view.filter.room.includeLeave) && !(m.roomId in response.rooms.leave)) {
        // An incremental sync shows a room left since `since`; an initial one, with
        // `include_leave`, every room left: its state and latest events up to the leave.
        response.rooms.leave[m.roomId] = await this.leftRoom(m.roomId, since?.rooms ?? 0, m.seq, req.timelineLimit, view);
      }
    }
    const roomIds = [...joinedIds, ...shown.filter((p) => p.endedSeq === null).map((p) => p.roomId)];
    return { response, roomIds, joinedIds: [...joinedIds], fullRooms, newlyJoined: newlyJoinedIds };
  }

  /** Where a timeline's `prev_batch` points: before its first event, or (none) the sync position. */
  private prevBatch(first: StoredEvent | undefined, upto: number): string {
    return first ? formatTopologicalToken(positionOf(first)) : formatSyncToken({ rooms: upto, peeks: 0 });
  }

  private section(state: StoredEvent[], timeline: StoredEvent[], limited: boolean, prevBatch: string, view: View, summary: RoomSummary | Record<string, never> = {}): RoomSection {
    return {
      state: { events: clientEvents(state, view.now, view.viewer).map(withoutRoomId) },
      timeline: { events: clientEvents(timeline, view.now, view.viewer).map(withoutRoomId), limited, prev_batch: prevBatch },
      ephemeral: { events: [] },
      account_data: { events: [] },
      unread_notifications: { highlight_count: 0, notification_count: 0 },
      summary,
    };
  }

  /**
   * The timeline slice in (after, upto], less what the viewer may not see (history
   * visibility, judged at each event). `hidden` says events were left out: the state
   * section then carries what they changed.
   *
   * A peeker (no membership) is also shown, where they fall, the state events still in
   * force at `upto`, whatever the visibility they were sent under: a new peek arrives like a
   * new join, whose timeline starts at `m.room.create` when the whole history fits (MSC2753;
   * sytest's peeking tests make a room world_readable and then expect exactly that). Those
   * events are the peeker's to see either way (the state section would carry them); state
   * since replaced, and messages, from before the room was world_readable stay hidden.
   */
  private async visibleTimeline(roomId: string, after: number, upto: number, limit: number, view: View): Promise<TimelineSlice & { hidden: boolean }> {
    // room.timeline.rooms / not_rooms: no timeline for this room (its state changes go in the state section).
    if (!keepsRoom(view.filter.timeline, roomId)) return { events: [], limited: false, hidden: true };
    const slice = await this.deps.rooms.timeline(roomId, after, upto, limit, view.filter.timeline);
    const viewer = view.memberOf.has(roomId) ? view.viewer.userId : null;
    let events = await this.deps.rooms.visibleTo(roomId, viewer, slice.events, upto);
    if (viewer === null && events.length < slice.events.length) {
      const visible = new Set(events);
      const inForce = new Set((await this.deps.rooms.stateBefore(roomId, upto + 1)).map((e) => e.eventId));
      events = slice.events.filter((e) => visible.has(e) || inForce.has(e.eventId));
    }
    // Events the timeline filter left out count as hidden: their state changes go in the state section.
    return { events, limited: slice.limited, hidden: events.length < slice.events.length || selects(view.filter.timeline) };
  }

  /**
   * The state section for a timeline over (after, upto] (after = 0: a full room). When
   * nothing was hidden: the state before the first event (only what changed since `after`
   * for an incremental, limited timeline). When events were hidden, their state changes
   * must still reach the client: the state at `upto` (or what changed since `after`), less
   * the entries the visible timeline itself carries.
   */
  private async stateFor(roomId: string, after: number, upto: number, slice: TimelineSlice & { hidden: boolean }, fullState: boolean, view: View, summary?: RoomSummary): Promise<StoredEvent[]> {
    if (!keepsRoom(view.filter.state, roomId)) return [];
    let state = await this.unfilteredStateFor(roomId, after, upto, slice, fullState);
    const lazy = view.filter.state.lazyLoadMembers === true;
    if (lazy && (fullState || after === 0)) {
      state = this.lazyMembers(roomId, state, slice.events, (summary ?? (await this.summaryAt(roomId, upto, view)))['m.heroes'] ?? [], view);
    } else if (lazy) {
      state = await this.lazyIncremental(roomId, after, state, slice.events, view);
    }
    const filtered = keptState(view, state);
    this.remember(roomId, [...filtered, ...slice.events], view);
    return filtered;
  }

  /** A lazy-loading member's sections are its own (a peeker's are shared): the member events they carry are remembered. */
  private remember(roomId: string, events: StoredEvent[], view: View): void {
    if (view.lazySeq !== undefined && view.memberOf.has(roomId)) this.sentMembers.record(view.viewer, view.lazySeq, roomId, events, view.answerPos);
  }

  /**
   * `lazy_load_members` in an incremental section: the state changes as they are (membership
   * changes in a gap included: a client learns of joins and leaves only from them), plus the
   * member events of the timeline's senders as they stood at its first event — for a sender the
   * client may never have been sent, whose member event is not in the timeline before its
   * first event there. A member of the room is not sent again a member event it has had in
   * this sync sequence (unless the filter asks for `include_redundant_members`) — had: carried
   * by an answer at or before `after`, the position the device syncs from (sentMembers.ts). A
   * peeker's sections are shared by every peeking device, so a peeker gets the senders'
   * member events each time.
   */
  private async lazyIncremental(roomId: string, after: number, state: StoredEvent[], timeline: StoredEvent[], view: View): Promise<StoredEvent[]> {
    const have = new Set(state.filter(isMemberEvent).map((e) => e.pdu.state_key as string));
    const wanted = new Set<string>();
    for (const e of timeline) {
      // Even one whose first event is its own membership change: the client shows who made it.
      if (!have.has(e.pdu.sender)) wanted.add(e.pdu.sender);
      if (isMemberEvent(e)) have.add(e.pdu.state_key as string); // later events' senders are described by it
    }
    // As of the timeline's first event, that event included (as Synapse reads it, and sytest
    // expects: a leave that opens the timeline is in the state section too).
    const added = wanted.size > 0 ? await this.membersAt(roomId, timeline[0]!.seq + 1, [...wanted]) : [];
    return this.unsent(roomId, after, [...state, ...added], view);
  }

  private readonly membersAtCache = new ImmutableReadCache<StoredEvent[]>(2_000);

  /** The member events of `userIds` as they stood just before `beforeSeq` (RoomReader.membersBefore), memoised. */
  private membersAt(roomId: string, beforeSeq: number, userIds: string[]): Promise<StoredEvent[]> {
    // Committed positions only: the answer never changes (devices woken together share it).
    return this.membersAtCache.get(`${roomId}\u0000${beforeSeq}\u0000${[...userIds].sort().join('\u0001')}`, () => this.deps.rooms.membersBefore(roomId, beforeSeq, userIds));
  }

  /** `events` less the member events the reader has had in its sync sequence by `after` (lazySeq). */
  private unsent(roomId: string, after: number, events: StoredEvent[], view: View): StoredEvent[] {
    const seq = view.lazySeq;
    if (seq === undefined || !view.memberOf.has(roomId)) return events;
    return events.filter((e) => !isMemberEvent(e) || !this.sentMembers.has(view.viewer, seq, roomId, e, after));
  }

  /**
   * With lazy-loaded members, an incremental section whose summary names heroes also carries
   * the heroes' member events the reader has not had (a client names the room by them).
   */
  private async heroMembers(roomId: string, after: number, upto: number, state: StoredEvent[], timeline: StoredEvent[], heroes: string[], view: View): Promise<StoredEvent[]> {
    const described = new Set([...state, ...timeline].filter(isMemberEvent).map((e) => e.pdu.state_key as string));
    const missing = new Set(heroes.filter((h) => !described.has(h)));
    if (missing.size === 0 || !keepsRoom(view.filter.state, roomId)) return state;
    const current = await this.membersAt(roomId, upto + 1, [...missing]);
    const added = keptState(view, this.unsent(roomId, after, current, view));
    this.remember(roomId, added, view);
    return [...state, ...added];
  }

  /**
   * `lazy_load_members` in a room's full state (a room new to the answer, or `full_state`):
   * of the member events, only those of the timeline's senders, of the heroes the summary
   * names, and the reader's own. The client loads the others when it needs them (`/members`).
   * Incremental sections keep every membership change, lazy or not: a client learns of joins
   * and leaves in a gap only from them (encryption depends on it).
   */
  private lazyMembers(roomId: string, state: StoredEvent[], timeline: StoredEvent[], heroes: string[], view: View): StoredEvent[] {
    const wanted = new Set([...timeline.map((e) => e.pdu.sender), ...heroes]);
    if (view.memberOf.has(roomId)) wanted.add(view.viewer.userId);
    return state.filter((e) => !isMemberEvent(e) || wanted.has(e.pdu.state_key as string));
  }

  private async unfilteredStateFor(roomId: string, after: number, upto: number, slice: TimelineSlice & { hidden: boolean }, fullState: boolean): Promise<StoredEvent[]> {
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
    return this.shareable(roomId, view, `full\u0000${upto}\u0000${limit}\u0000${view.filter.key}`, () => this.makeFullRoom(roomId, upto, limit, view));
  }

  private incrementalRoom(roomId: string, after: number, upto: number, limit: number, fullState: boolean, view: View): Promise<RoomSection> {
    return this.shareable(roomId, view, `inc\u0000${after}\u0000${upto}\u0000${limit}\u0000${fullState}\u0000${view.filter.key}`, () =>
      this.makeIncrementalRoom(roomId, after, upto, limit, fullState, view),
    );
  }

  private async makeFullRoom(roomId: string, upto: number, limit: number, view: View): Promise<RoomSection> {
    const slice = await this.visibleTimeline(roomId, 0, upto, limit, view);
    // One summary for the section and for the heroes lazy loading keeps.
    const summary = await this.summaryAt(roomId, upto, view);
    const state = await this.stateFor(roomId, 0, upto, slice, true, view, summary);
    return this.section(state, slice.events, slice.limited, this.prevBatch(slice.events[0], upto), view, summary);
  }

  /**
   * The room's summary at `upto` (heroes, joined and invited counts), as the reader sees it:
   * a member is never among its own heroes; a reader with no membership (a peeker) shares
   * its answer with every other.
   */
  private async summaryAt(roomId: string, upto: number, view: View): Promise<RoomSummary> {
    return roomSummary(await this.deps.rooms.stateBefore(roomId, upto + 1), view.memberOf.has(roomId) ? view.viewer.userId : null);
  }

  private async makeIncrementalRoom(roomId: string, after: number, upto: number, limit: number, fullState: boolean, view: View): Promise<RoomSection> {
    const slice = await this.visibleTimeline(roomId, after, upto, limit, view);
    // With the full state asked for, the summary comes along (and gives lazy loading its heroes).
    const full = fullState ? await this.summaryAt(roomId, upto, view) : undefined;
    const state = await this.stateFor(roomId, after, upto, slice, fullState, view, full);
    // Otherwise the summary when the membership changed (the spec's counts are required then,
    // and may be left out otherwise).
    // So does a change of the room's name or alias: whether it has heroes depends on them.
    const changed = [...state, ...slice.events];
    const membershipChanged = changed.some(isMemberEvent) || changed.some((e) => (e.pdu.type === 'm.room.name' || e.pdu.type === 'm.room.canonical_alias') && e.pdu.state_key === '');
    const summary = full ?? (membershipChanged ? await this.summaryAt(roomId, upto, view) : {});
    const heroes = full ? undefined : (summary as Partial<RoomSummary>)['m.heroes'];
    const withHeroes = view.filter.state.lazyLoadMembers && heroes && heroes.length > 0 ? await this.heroMembers(roomId, after, upto, state, slice.events, heroes, view) : state;
    return this.section(withHeroes, slice.events, slice.limited, this.prevBatch(slice.events[0], upto), view, summary);
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
    const slice = await this.visibleTimeline(peek.roomId, after, upto, limit, view);
    if (slice.events.length === 0) return {};
    // The state up to the timeline's start, as in any left room: what changed in a gap, all
    // of it for a device that never had the room.
    const state = await this.stateFor(peek.roomId, after, upto, slice, false, view);
    return {
      state: { events: clientEvents(state, view.now, view.viewer).map(withoutRoomId) },
      timeline: { events: clientEvents(slice.events, view.now, view.viewer).map(withoutRoomId), limited: slice.limited, prev_batch: this.prevBatch(slice.events[0], upto) },
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
    const state = await this.stateFor(roomId, after, leaveSeq, slice, false, view);
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
  const rooms = Object.keys(join).length + Object.keys(peek).length + Object.keys(leave).length + Object.keys(invite).length;
  return rooms + r.presence.events.length + r.account_data.events.length === 0;
}

const isMemberEvent = (e: StoredEvent) => e.pdu.type === 'm.room.member';

/** The state events the sync filter's `room.state` keeps. */
const keptState = (view: View, events: StoredEvent[]) =>
  applyFilter(
    view.filter.state,
    events,
    (e) => e.pdu.type,
    (e) => e.pdu.sender,
    (e) => e.pdu.content ?? {},
  );

/** Whether a room section has timeline or state events. */
function hasEvents(section: RoomSection): boolean {
  return ((section.timeline as { events?: unknown[] } | undefined)?.events?.length ?? 0) > 0 || ((section.state as { events?: unknown[] } | undefined)?.events?.length ?? 0) > 0;
}

/** A /sync answer: the response, the rooms to wait on, and its UTF-8 JSON body (made once, on first use). */
export interface SyncAnswer {
  response: SyncResponse;
  roomIds: string[];
  /** The joined rooms among them: their receipts, typing and members' presence wake the long-poll too. */
  joinedIds: string[];
  body(): Buffer;
}

/** How often a process that takes typing notifications writes the end of spells whose timer was lost (a process stopped). */
const TYPING_SWEEP_MS = 5_000;

/** Users whose latest client-data change SyncService remembers (then it starts again from the current position). */
const MAX_TRACKED_USERS = 100_000;

/** Distinct shared answers kept for one position; past this, answers are computed per request. */
const MAX_SHARED_ANSWERS = 10_000;

type SharedAnswer = SyncAnswer & { computed: Computed };

/** The positions shared answers are kept for (one set at a time). */
function sharedAt(upto: SyncTokenPosition): string {
  return `${upto.rooms}_${upto.peeks}_${upto.clientData}`;
}

/** The PEEKS position at or before which an ended peek changes nothing in the answer (both positions). */
function endedAfterOf(req: SyncRequest, upto: SyncPosition): number {
  return Math.min(req.since?.peeks ?? Infinity, upto.peeks);
}

/** The entry's rows a sync past `endedAfter` can show; undefined when the entry dropped some it needs (see syncCache.ts). */
function rowsAfter(entry: DevicePeekEntry, endedAfter: number): readonly DevicePeekRow[] | undefined {
  if (endedAfter < entry.floor) return undefined;
  return entry.rows.every((r) => mattersAfter(r, endedAfter)) ? entry.rows : entry.rows.filter((r) => mattersAfter(r, endedAfter));
}

function answerOf(computed: Computed): SyncAnswer {
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
function shareKey(req: SyncRequest, upto: SyncPosition, peeks: readonly DevicePeekRow[]): string {
  const since = req.since;
  // Against both positions (since may be past upto when processes differ in how far they are).
  const at = (seq: number | null) => (seq === null ? 'n' : `${since && seq <= since.peeks ? 'b' : 'B'}${seq <= upto.peeks ? 'u' : 'U'}`);
  const parts: (string | number)[] = [since ? `${since.rooms}_${since.peeks}_${since.clientData}` : '-', req.timelineLimit, req.fullState ? 1 : 0, (req.filter ?? NO_FILTER).key];
  const rows = peeks.length > 1 ? [...peeks].sort((x, y) => (x.roomId < y.roomId ? -1 : x.roomId > y.roomId ? 1 : 0)) : peeks;
  for (const p of rows) {
    const ended = at(p.endedSeq);
    const sawPrevious = since !== undefined && p.prevStartedSeq !== null && p.prevEndedSeq !== null && p.prevStartedSeq <= since.peeks && p.prevEndedSeq > since.peeks;
    parts.push(p.roomId, at(p.startedSeq), ended, p.roomSeq, sawPrevious ? 1 : 0);
    if (ended === 'Bu') parts.push(p.endReason ?? '', p.endedRoomSeq ?? '', p.endedAt ?? '', p.expiresAt ?? '');
  }
  return parts.join('\u0000');
}
