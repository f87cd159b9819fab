// The room actor's shell: the only place where the log meets decide/evolve. Load the
// room's two subjects, decide, append with the expected last subject sequence, fold.
import type { Logger } from '../logger.ts';
import { eachEvent, encodeEnvelope, position, storedEvents } from '../events/envelope.ts';
import { decodePeekEnvelope, type PeekEvent, type StoredPeekEvent } from '../events/peekEvents.ts';
import { decodeRoomEnvelope, type RoomPduAppended, type StoredRoomEvent } from '../events/roomEvents.ts';
import { ConcurrencyError } from '../nats/errors.ts';
import type { EventLog } from '../nats/eventLog.ts';
import type { DecideContext, PduDraft, ReceivedPdu, RoomCommand } from './commands.ts';
import { decide, impliedEndings } from './decide.ts';
import { ConflictError, DomainError } from './errors.ts';
import { evolve, type StoredEvent } from './evolve.ts';
import type { PduFactory } from './pduFactory.ts';
import type { SnapshotStore } from './snapshots.ts';
import { commandRecord, initialState, recordCommand, type CommandRecord, type RoomState } from './state.ts';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export interface ActorSettings {
  serverName: string;
  peekLifetimeMs: number;
  inboundRenewalIntervalMs: number;
  /** How many times a conflicting append is retried after reloading. */
  maxConflictRetries: number;
  /** Save a snapshot after this many events folded since the last one (0: never). */
  snapshotInterval?: number;
}

export interface ActorDeps {
  log: EventLog;
  clock: Clock;
  pduFactory: PduFactory;
  settings: ActorSettings;
  snapshots?: SnapshotStore;
  /**
   * True while this process is certainly the only writer of the room's subjects (all roles
   * in one process). Then no freshness read is needed: nothing can have moved under the
   * actor, and the expected-sequence append still refuses anything that did. Unset:
   * another host may write (roles split: a lease does not fence a paused holder), so check.
   */
  exclusive?: boolean;
  /** Debug lines per command (with its ID, which carries the request's). */
  logger?: Logger;
}

/** What a command's caller learns: the events it appended (with their positions), no more. */
export interface CommandResult {
  peekEvents: StoredPeekEvent[];
  roomEvents: StoredRoomEvent[];
  /** Set when an idempotent send had already been done. */
  existingEventId?: string;
  /** The room as the command left it: its version and its newest event's ROOMS position. */
  room?: { roomVersion: string; latestSeq: number };
  /** How many conflicts were retried before the command went through. */
  conflicts: number;
}

export class RoomActor {
  private state: RoomState;
  lastUsedAt = 0;
  /** Events folded since the last snapshot (loaded or saved). */
  private sinceSnapshot = 0;
  private saving?: Promise<void>;
  /** Set when an append failed in a way that leaves its outcome unknown: reload first. */
  private uncertain = false;

  constructor(
    readonly roomId: string,
    private readonly deps: ActorDeps,
  ) {
    this.state = initialState(roomId);
  }

  get current(): RoomState {
    return this.state;
  }

  /** Rebuilds the state from the room's subjects, then heals peeks the room no longer allows. */
  async activate(): Promise<void> {
    await this.reload();
    await this.heal();
    this.uncertain = false;
  }

  private async reload(): Promise<void> {
    const { log, snapshots } = this.deps;
    let state = (await snapshots?.load(this.roomId).catch(() => null)) ?? initialState(this.roomId);
    if (state.peeksSeq > 0 || state.roomsSeq > 0) {
      // A snapshot from before the streams were recreated is worthless: start over.
      const [p, r] = await Promise.all([log.lastSeq('peeks', this.roomId), log.lastSeq('rooms', this.roomId)]);
      if (p < state.peeksSeq || r < state.roomsSeq) state = initialState(this.roomId);
    }
    // PEEKS first: every peek event we fold was caused by room events we then also fold.
    const peeks = await log.read('peeks', this.roomId, state.peeksSeq + 1);
    const rooms = await log.read('rooms', this.roomId, state.roomsSeq + 1);
    let folded = 0;
    for (const r of rooms) {
      const { commandId, events } = decodeRoomEnvelope(r.data);
      eachEvent(r.seq, events, (event, seq) => (state = evolve(state, { stream: 'rooms', seq, event }, true)));
      state = { ...state, roomsSeq: r.seq, commands: recordCommand(state.commands, commandId, 'rooms', r.seq, true) };
      folded += events.length;
    }
    for (const r of peeks) {
      const { commandId, events } = decodePeekEnvelope(r.data);
      eachEvent(r.seq, events, (event, seq) => (state = evolve(state, { stream: 'peeks', seq, event }, true)));
      state = { ...state, peeksSeq: r.seq, commands: recordCommand(state.commands, commandId, 'peeks', r.seq, true) };
      folded += events.length;
    }
    this.state = state;
    this.sinceSnapshot = folded;
    this.maybeSnapshot();
  }

  /** Saves a snapshot in the background once enough events were folded since the last. */
  private maybeSnapshot(): void {
    const interval = this.deps.settings.snapshotInterval ?? 0;
    if (!this.deps.snapshots || interval <= 0 || this.sinceSnapshot < interval || this.saving) return;
    // The store must serialise `state` before its first await: the actor folds its later
    // appends into the same maps (KvSnapshotStore.save does).
    const state = this.state;
    this.sinceSnapshot = 0;
    this.saving = this.deps.snapshots
      .save(state)
      .catch(() => undefined) // derived data: a failed save only means a longer read next time
      .finally(() => {
        this.saving = undefined;
        this.maybeSnapshot(); // what was folded meanwhile may be due already
      });
  }

  /** Waits for a snapshot being saved (tests, shutdown). */
  async flushSnapshot(): Promise<void> {
    while (this.saving) await this.saving;
  }

  /**
   * A crash between a command's ROOMS append and its PEEKS append leaves live peeks the
   * room no longer allows (a joined user, a room no longer world_readable): end them.
   */
  private async heal(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const endings = withEndSeq(impliedEndings(this.state.room, this.state, this.deps.clock.now()), this.state);
      if (endings.length === 0) return;
      try {
        await this.appendPeeks(endings, `heal:${this.roomId}:${this.state.peeksSeq}`);
        return;
      } catch (err) {
        if (!(err instanceof ConcurrencyError) || attempt >= this.deps.settings.maxConflictRetries) throw err;
        await this.reload();
      }
    }
  }

  async handle(command: RoomCommand, commandId: string): Promise<CommandResult> {
    try {
      if (this.uncertain) await this.activate();
      return await this.decideAndAppend(command, commandId);
    } catch (err) {
      // A domain answer leaves the state as it was; anything else (a NATS timeout, a lost
      // connection) may or may not have appended: read the log again before the next command.
      if (!(err instanceof DomainError)) this.uncertain = true;
      throw err;
    }
  }

  private async decideAndAppend(command: RoomCommand, commandId: string): Promise<CommandResult> {
    const { settings, clock } = this.deps;
    let conflicts = 0;
    const conflict = async (err: unknown) => {
      conflicts++;
      if (conflicts > settings.maxConflictRetries) {
        throw new ConflictError(`room ${this.roomId} is busy: ${conflicts} conflicting writes in a row`, { cause: err });
      }
      // Back off a little, with jitter, so racing writers stop colliding.
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(2 ** conflicts, 50)));
      await this.reload();
    };
    for (;;) {
      // A command this room has already taken (a retry after a lost reply, or a host that
      // died after appending): answer with what the log holds, never decide it again.
      const done = commandRecord(this.state, commandId);
      if (done) return this.recorded(done, conflicts);
      const ctx: DecideContext = {
        now: clock.now(),
        serverName: settings.serverName,
        peekLifetimeMs: settings.peekLifetimeMs,
        inboundRenewalIntervalMs: settings.inboundRenewalIntervalMs,
      };
      const decided = decide(this.state, command, ctx);
      const appendsNothing = decided instanceof DomainError || (decided.drafts.length === 0 && decided.received.length === 0 && decided.peeks.length === 0);
      // An answer that appends nothing is never checked by an append: make sure it was not
      // decided on a stale copy of the room (another host may have written since).
      if (appendsNothing && !this.deps.exclusive && (await this.isStale())) {
        await conflict(new ConcurrencyError(this.deps.log.naming.roomSubject('peeks', this.roomId), this.state.peeksSeq));
        continue;
      }
      if (decided instanceof DomainError) throw decided;
      if (decided.existingEventId) {
        return { peekEvents: [], roomEvents: [], existingEventId: decided.existingEventId, room: this.roomSummary(), conflicts };
      }
      try {
        const rooms = await this.appendRoomEvents(decided.drafts, decided.received, command, commandId, ctx.now);
        if (rooms.duplicate) {
          // Another attempt of this command (here or on another host) is in the log already.
          await this.reload();
          await this.heal();
          return this.recorded(commandRecord(this.state, commandId) ?? { rooms: rooms.seq }, conflicts);
        }
        const roomEvents = rooms.stored;
        // Peek decisions read the room (visibility, membership, encryption): when only
        // PEEKS is appended, the room must not have moved under us.
        // (An exclusive writer knows it has not: it is the only one who writes there.)
        const checkRooms = roomEvents.length === 0 && !this.deps.exclusive && decided.peeks.some((e) => e.type === 'PeekStarted' || e.type === 'PeekRenewed');
        if (checkRooms && (await this.deps.log.lastSeq('rooms', this.roomId)) !== this.state.roomsSeq) {
          throw new ConcurrencyError(this.deps.log.naming.roomSubject('rooms', this.roomId), this.state.roomsSeq);
        }
        let peekEvents: StoredPeekEvent[] = [];
        try {
          const peeks = await this.appendPeeks(withEndSeq(decided.peeks, this.state), commandId);
          if (peeks.duplicate) {
            await this.reload();
            return this.recorded(commandRecord(this.state, commandId) ?? { peeks: peeks.seq }, conflicts);
          }
          peekEvents = peeks.stored;
        } catch (err) {
          // The room events are in; only the peek endings they imply are missing. Healing
          // re-derives exactly those from the reloaded room, so nothing is decided twice.
          if (!(err instanceof ConcurrencyError) || roomEvents.length === 0) throw err;
          conflicts++;
          await this.reload();
          await this.heal();
        }
        if (checkRooms && (await this.deps.log.lastSeq('rooms', this.roomId)) !== this.state.roomsSeq) {
          // The room changed between our check and our append: fold it in and end what it
          // no longer allows, so no peek outlives the room's permission.
          await this.reload();
          await this.heal();
        }
        return { peekEvents, roomEvents, room: this.roomSummary(), conflicts };
      } catch (err) {
        if (!(err instanceof ConcurrencyError)) throw err;
        await conflict(err);
      }
    }
  }

  private roomSummary(): CommandResult['room'] {
    const room = this.state.room;
    return room ? { roomVersion: room.roomVersion, latestSeq: room.latest.seq } : undefined;
  }

  /** The answer to a command the log already holds, read back from its envelopes. */
  private async recorded(done: CommandRecord, conflicts: number): Promise<CommandResult> {
    const { log } = this.deps;
    const [rooms, peeks] = await Promise.all([done.rooms ? log.get('rooms', done.rooms) : null, done.peeks ? log.get('peeks', done.peeks) : null]);
    const roomEvents = rooms ? storedEvents(rooms.seq, decodeRoomEnvelope(rooms.data).events) : [];
    const peekEvents = peeks ? storedEvents(peeks.seq, decodePeekEnvelope(peeks.data).events) : [];
    return { roomEvents, peekEvents, room: this.roomSummary(), conflicts };
  }

  /** True when either of the room's subjects has moved past what this actor has folded. */
  private async isStale(): Promise<boolean> {
    const [peeks, rooms] = await Promise.all([this.deps.log.lastSeq('peeks', this.roomId), this.deps.log.lastSeq('rooms', this.roomId)]);
    return peeks !== this.state.peeksSeq || rooms !== this.state.roomsSeq;
  }

  private async appendRoomEvents(drafts: PduDraft[], received: ReceivedPdu[], command: RoomCommand, commandId: string, now: number): Promise<Appended<StoredRoomEvent>> {
    if (drafts.length === 0 && received.length === 0) return { stored: [], seq: 0, duplicate: false };
    const records: RoomPduAppended[] = [];
    let room = this.state.room;
    let scratch = this.state;
    const roomVersion = room?.roomVersion ?? (command.type === 'CreateRoom' ? command.roomVersion : '10');
    for (const [i, draft] of drafts.entries()) {
      const built = this.deps.pduFactory.build(this.roomId, roomVersion, draft, room, now);
      const record: RoomPduAppended = {
        type: 'RoomPdu',
        v: 1,
        roomId: this.roomId,
        eventId: built.eventId,
        roomVersion,
        pdu: built.pdu,
        origin: 'local',
        ...(i === 0 && command.type === 'SendEvents' && command.txn ? { txn: command.txn } : {}),
      };
      records.push(record);
      scratch = evolve(scratch, { stream: 'rooms', seq: position(scratch.roomsSeq, 0), event: record });
      room = scratch.room;
    }
    for (const item of received) {
      const version = room?.roomVersion ?? versionFromCreate(item.pdu) ?? '10';
      records.push({ type: 'RoomPdu', v: 1, roomId: this.roomId, eventId: item.eventId, roomVersion: version, pdu: item.pdu, origin: item.history ? 'backfill' : 'federation' });
      scratch = evolve(scratch, { stream: 'rooms', seq: position(scratch.roomsSeq, 0), event: records[records.length - 1]! });
      room = scratch.room;
    }
    const appended = await this.deps.log.append('rooms', this.roomId, encodeEnvelope(commandId, records), this.state.roomsSeq, commandId);
    if (appended.duplicate) return { stored: [], ...appended };
    const stored = records.map((event, i) => ({ seq: position(appended.seq, i), event }));
    // In place: the log has it, and the actor alone holds its state (decisions and the
    // scratch copy above built their own). Copying the maps per event made every command
    // O(state events + live peeks + remembered transactions) in a big or busy room.
    for (const s of stored) this.state = evolve(this.state, { stream: 'rooms', ...s }, true);
    this.state = { ...this.state, roomsSeq: appended.seq, commands: recordCommand(this.state.commands, commandId, 'rooms', appended.seq, true) };
    this.sinceSnapshot += stored.length;
    this.maybeSnapshot();
    return { stored, ...appended };
  }

  private async appendPeeks(events: PeekEvent[], commandId: string): Promise<Appended<StoredPeekEvent>> {
    if (events.length === 0) return { stored: [], seq: 0, duplicate: false };
    const appended = await this.deps.log.append('peeks', this.roomId, encodeEnvelope(commandId, events), this.state.peeksSeq, commandId);
    if (appended.duplicate) return { stored: [], ...appended };
    const stored = events.map((event, i) => ({ seq: position(appended.seq, i), event }));
    // In place, as for room events: a peek command no longer copies the room's live peeks.
    for (const s of stored) this.state = evolve(this.state, { stream: 'peeks', ...s } as StoredEvent, true);
    this.state = { ...this.state, peeksSeq: appended.seq, commands: recordCommand(this.state.commands, commandId, 'peeks', appended.seq, true) };
    this.sinceSnapshot += stored.length;
    this.maybeSnapshot();
    return { stored, ...appended };
  }
}

interface Appended<S> {
  stored: S[];
  /** Stream sequence of the envelope (of the earlier one, for a duplicate). */
  seq: number;
  duplicate: boolean;
}

function versionFromCreate(pdu: { type: string; content: Record<string, unknown> }): string | undefined {
  const v = pdu.type === 'm.room.create' ? pdu.content.room_version : undefined;
  return typeof v === 'string' ? v : undefined;
}

/**
 * Stamps each PeekExpired with the ROOMS position the room had reached when the peek
 * ended — after this command's own room events, which only the shell knows — so that a
 * peer is still sent the event that ended its peek, and nothing after it.
 */
function withEndSeq(events: PeekEvent[], state: RoomState): PeekEvent[] {
  const roomSeq = state.room?.latest.seq ?? 0;
  return events.map((e) => (e.type === 'PeekExpired' && roomSeq > 0 ? { ...e, roomSeq } : e));
}
