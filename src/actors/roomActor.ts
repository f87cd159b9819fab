// The room actor's shell: the only place where the log meets decide/evolve. Load the
// room's two subjects, decide, append with the expected last subject sequence, fold.
import { decodePeekEvent, encodePeekEvent, type PeekEvent, type StoredPeekEvent } from '../events/peekEvents';
import { decodeRoomEvent, encodeRoomEvent, type RoomPduAppended, type StoredRoomEvent } from '../events/roomEvents';
import { ConcurrencyError } from '../nats/errors';
import type { EventLog } from '../nats/eventLog';
import type { DecideContext, PduDraft, ReceivedPdu, RoomCommand } from './commands';
import { decide, impliedEndings } from './decide';
import { ConflictError, DomainError } from './errors';
import { evolve, type StoredEvent } from './evolve';
import type { PduFactory } from './pduFactory';
import type { SnapshotStore } from './snapshots';
import { initialState, type RoomState } from './state';

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
}

export interface CommandResult {
  state: RoomState;
  peekEvents: StoredPeekEvent[];
  roomEvents: StoredRoomEvent[];
  /** Set when an idempotent send had already been done. */
  existingEventId?: string;
  /** How many conflicts were retried before the command went through. */
  conflicts: number;
}

export class RoomActor {
  private state: RoomState;
  lastUsedAt = 0;
  /** Events folded since the last snapshot (loaded or saved). */
  private sinceSnapshot = 0;
  private saving?: Promise<void>;

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
    for (const r of rooms) {
      const event = decodeRoomEvent(r.data);
      state = event ? evolve(state, { stream: 'rooms', seq: r.seq, event }, true) : { ...state, roomsSeq: r.seq };
    }
    for (const r of peeks) {
      const event = decodePeekEvent(r.data);
      state = event ? evolve(state, { stream: 'peeks', seq: r.seq, event }, true) : { ...state, peeksSeq: r.seq };
    }
    this.state = state;
    this.sinceSnapshot = rooms.length + peeks.length;
    this.maybeSnapshot();
  }

  /** Saves a snapshot in the background once enough events were folded since the last. */
  private maybeSnapshot(): void {
    const interval = this.deps.settings.snapshotInterval ?? 0;
    if (!this.deps.snapshots || interval <= 0 || this.sinceSnapshot < interval || this.saving) return;
    const state = this.state;
    this.sinceSnapshot = 0;
    this.saving = this.deps.snapshots
      .save(state)
      .catch(() => undefined) // derived data: a failed save only means a longer read next time
      .finally(() => (this.saving = undefined));
  }

  /** Waits for a snapshot being saved (tests, shutdown). */
  async flushSnapshot(): Promise<void> {
    await this.saving;
  }

  /**
   * A crash between a command's ROOMS append and its PEEKS append leaves live peeks the
   * room no longer allows (a joined user, a room no longer world_readable): end them.
   */
  private async heal(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const endings = withEndSeq(impliedEndings(this.state.room, this.state, this.deps.clock.now()), this.state.roomsSeq);
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
      if (appendsNothing && (await this.isStale())) {
        await conflict(new ConcurrencyError(this.deps.log.naming.roomSubject('peeks', this.roomId), this.state.peeksSeq));
        continue;
      }
      if (decided instanceof DomainError) throw decided;
      if (decided.existingEventId) {
        return { state: this.state, peekEvents: [], roomEvents: [], existingEventId: decided.existingEventId, conflicts };
      }
      // A retry after a conflict is a new attempt: it must not collide with the message IDs
      // of a partly appended earlier attempt.
      const attemptId = conflicts === 0 ? commandId : `${commandId}~${conflicts}`;
      try {
        const roomEvents = await this.appendRoomEvents(decided.drafts, decided.received, command, attemptId, ctx.now);
        // Peek decisions read the room (visibility, membership, encryption): when only
        // PEEKS is appended, the room must not have moved under us.
        const startsPeek = roomEvents.length === 0 && decided.peeks.some((e) => e.type === 'PeekStarted' || e.type === 'PeekRenewed');
        if (startsPeek && (await this.deps.log.lastSeq('rooms', this.roomId)) !== this.state.roomsSeq) {
          throw new ConcurrencyError(this.deps.log.naming.roomSubject('rooms', this.roomId), this.state.roomsSeq);
        }
        let peekEvents: StoredPeekEvent[] = [];
        try {
          peekEvents = await this.appendPeeks(withEndSeq(decided.peeks, this.state.roomsSeq), attemptId);
        } catch (err) {
          // The room events are in; only the peek endings they imply are missing. Healing
          // re-derives exactly those from the reloaded room, so nothing is decided twice.
          if (!(err instanceof ConcurrencyError) || roomEvents.length === 0) throw err;
          conflicts++;
          await this.reload();
          await this.heal();
        }
        if (startsPeek && (await this.deps.log.lastSeq('rooms', this.roomId)) !== this.state.roomsSeq) {
          // The room changed between our check and our append: fold it in and end what it
          // no longer allows, so no peek outlives the room's permission.
          await this.reload();
          await this.heal();
        }
        return { state: this.state, peekEvents, roomEvents, conflicts };
      } catch (err) {
        if (!(err instanceof ConcurrencyError)) throw err;
        await conflict(err);
      }
    }
  }

  /** True when either of the room's subjects has moved past what this actor has folded. */
  private async isStale(): Promise<boolean> {
    const [peeks, rooms] = await Promise.all([this.deps.log.lastSeq('peeks', this.roomId), this.deps.log.lastSeq('rooms', this.roomId)]);
    return peeks !== this.state.peeksSeq || rooms !== this.state.roomsSeq;
  }

  private async appendRoomEvents(
    drafts: PduDraft[],
    received: ReceivedPdu[],
    command: RoomCommand,
    commandId: string,
    now: number,
  ): Promise<StoredRoomEvent[]> {
    if (drafts.length === 0 && received.length === 0) return [];
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
      scratch = evolve(scratch, { stream: 'rooms', seq: scratch.roomsSeq, event: record });
      room = scratch.room;
    }
    for (const item of received) {
      const version = room?.roomVersion ?? versionFromCreate(item.pdu) ?? '10';
      records.push({ type: 'RoomPdu', v: 1, roomId: this.roomId, eventId: item.eventId, roomVersion: version, pdu: item.pdu, origin: 'federation' });
      scratch = evolve(scratch, { stream: 'rooms', seq: scratch.roomsSeq, event: records[records.length - 1]! });
      room = scratch.room;
    }
    const appended = await this.deps.log.append('rooms', this.roomId, records.map(encodeRoomEvent), this.state.roomsSeq, commandId);
    const stored = records.map((event, i) => ({ seq: appended.seqs[i]!, event }));
    if (appended.duplicate) await this.reload(); // a retried command: the log holds the first attempt's events
    else for (const s of stored) this.state = evolve(this.state, { stream: 'rooms', ...s });
    this.sinceSnapshot += stored.length;
    this.maybeSnapshot();
    return stored;
  }

  private async appendPeeks(events: PeekEvent[], commandId: string): Promise<StoredPeekEvent[]> {
    if (events.length === 0) return [];
    const appended = await this.deps.log.append('peeks', this.roomId, events.map(encodePeekEvent), this.state.peeksSeq, commandId);
    const stored = events.map((event, i) => ({ seq: appended.seqs[i]!, event }));
    if (appended.duplicate) await this.reload();
    else for (const s of stored) this.state = evolve(this.state, { stream: 'peeks', ...s } as StoredEvent);
    this.sinceSnapshot += stored.length;
    this.maybeSnapshot();
    return stored;
  }
}

function versionFromCreate(pdu: { type: string; content: Record<string, unknown> }): string | undefined {
  const v = pdu.type === 'm.room.create' ? pdu.content.room_version : undefined;
  return typeof v === 'string' ? v : undefined;
}

/**
 * Stamps each PeekExpired with the ROOMS sequence the room had reached when the peek
 * ended — after this command's own room events, which only the shell knows — so that a
 * peer is still sent the event that ended its peek, and nothing after it.
 */
function withEndSeq(events: PeekEvent[], roomSeq: number): PeekEvent[] {
  return events.map((e) => (e.type === 'PeekExpired' && roomSeq > 0 ? { ...e, roomSeq } : e));
}
