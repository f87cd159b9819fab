// Hosts room actors: one mailbox per room (a room's commands run one at a time, rooms
// run in parallel), activation on first use, passivation of idle rooms — after an idle
// time, and at once, least recently used first, when a new room would exceed maxActors.
import { randomUUID } from 'node:crypto';
import type { RoomCommand } from './commands.ts';
import { validateCommand } from './validateCommand.ts';
import { RoomActor, type ActorDeps, type CommandResult } from './roomActor.ts';
import type { RoomState } from './state.ts';
import { DomainError } from './errors.ts';
import { isTransient } from '../nats/errors.ts';
import { commandDurationSeconds, commandsTotal } from '../metrics.ts';

/** How a command ended, as peekd_commands_total counts it. */
export function commandOutcome(err: unknown): 'rejected' | 'unavailable' | 'error' {
  if (err instanceof DomainError) return err.code === 'conflict' ? 'unavailable' : 'rejected';
  return isTransient(err) ? 'unavailable' : 'error';
}

interface Entry {
  actor: RoomActor;
  /** The tail of the room's mailbox: the next command runs after it settles. */
  tail: Promise<unknown>;
  pending: number;
}

export interface ActorHostOptions {
  /** Rooms idle this long are dropped from memory (their state is in the log). */
  passivateAfterMs: number;
  /**
   * Most actors held (default DEFAULT_MAX_ACTORS). A new room past it first passivates idle
   * actors, least recently used first; an actor with commands queued is never dropped, so
   * a host whose actors are all busy still takes the new room (and holds more for a while).
   */
  maxActors?: number;
}

export const DEFAULT_MAX_ACTORS = 100_000;

export class ActorHost {
  /** Active actors; the Map's order is recency order (a command moves its room to the end). */
  private readonly rooms = new Map<string, Entry>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly maxActors: number;

  constructor(
    private readonly deps: ActorDeps,
    private readonly options: ActorHostOptions = { passivateAfterMs: 5 * 60_000 },
  ) {
    this.maxActors = options.maxActors ?? DEFAULT_MAX_ACTORS;
    if (!(this.maxActors >= 1)) throw new RangeError('maxActors must be positive');
    this.sweeper = setInterval(() => this.passivateIdle(), Math.max(1000, Math.min(options.passivateAfterMs, 60_000)));
    this.sweeper.unref();
  }

  /** Runs `command` on its room's actor after the commands already queued for that room. */
  send(command: RoomCommand, commandId: string = randomUUID()): Promise<CommandResult> {
    const started = performance.now();
    const { type } = command;
    const invalid = validateCommand(command);
    if (invalid) {
      commandsTotal.inc({ type, outcome: 'rejected' });
      return Promise.reject(invalid);
    }
    let entry = this.rooms.get(command.roomId);
    if (entry) {
      // Now the most recently used.
      this.rooms.delete(command.roomId);
      this.rooms.set(command.roomId, entry);
    } else {
      this.makeRoomForOne();
      const actor = new RoomActor(command.roomId, this.deps);
      entry = { actor, tail: actor.activate(), pending: 0 };
      this.rooms.set(command.roomId, entry);
    }
    const e = entry;
    e.pending++;
    const run = e.tail.then(
      () => e.actor.handle(command, commandId),
      () => {
        // Activation (or the command before) failed: start this one from the log again.
        return e.actor.activate().then(() => e.actor.handle(command, commandId));
      },
    );
    e.tail = run.catch(() => undefined);
    const { logger } = this.deps;
    const settled = (outcome: string, err?: unknown) => {
      e.pending--;
      e.actor.lastUsedAt = this.deps.clock.now();
      const seconds = (performance.now() - started) / 1000;
      commandsTotal.inc({ type, outcome });
      commandDurationSeconds.observe({ type }, seconds);
      if (outcome === 'error') logger?.warn({ req_id: commandId, room: command.roomId, command: type, err }, 'command failed');
      else if (logger?.isLevelEnabled('debug')) logger.debug({ req_id: commandId, room: command.roomId, command: type, outcome, ms: Math.round(seconds * 1000) }, 'command ran');
    };
    return run.then(
      (result) => {
        settled('ok');
        return result;
      },
      (err: unknown) => {
        settled(commandOutcome(err), err);
        throw err;
      },
    );
  }

  /** The state of the room's actor, if it is active here (tests and diagnostics). */
  state(roomId: string): RoomState | undefined {
    return this.rooms.get(roomId)?.actor.current;
  }

  get activeRooms(): number {
    return this.rooms.size;
  }

  /** Drops idle actors from memory; returns how many. */
  passivateIdle(now = this.deps.clock.now()): number {
    let dropped = 0;
    for (const [roomId, e] of this.rooms) {
      if (e.pending === 0 && now - e.actor.lastUsedAt >= this.options.passivateAfterMs) {
        this.rooms.delete(roomId);
        dropped++;
      }
    }
    return dropped;
  }

  /**
   * Before a new actor is added at maxActors or more: passivates idle actors, least recently
   * used first, until there is room for it (or none idle is left).
   */
  private makeRoomForOne(): void {
    if (this.rooms.size < this.maxActors) return;
    for (const [roomId, e] of this.rooms) {
      if (e.pending === 0) this.rooms.delete(roomId);
      if (this.rooms.size < this.maxActors) return;
    }
  }

  /** Drops the actors of rooms `which` selects once their queued commands ran (a shard moved away). */
  async forget(which: (roomId: string) => boolean): Promise<void> {
    const leaving = [...this.rooms].filter(([roomId]) => which(roomId));
    await Promise.all(leaving.map(([, e]) => e.tail));
    for (const [roomId, e] of leaving) if (this.rooms.get(roomId) === e && e.pending === 0) this.rooms.delete(roomId);
  }

  /** Waits for queued commands, then forgets every actor. */
  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.rooms.values()].map((e) => e.tail));
    this.rooms.clear();
  }
}
