// Wake-ups across processes when roles are split: the projections process announces each
// committed batch on a core NATS subject (projection, position, rooms, users, devices);
// HTTP and federation processes feed their notifier and track positions from it, with a
// database poll as the fallback for a lost message.
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { PeekEvent } from '../events/peekEvents.ts';
import type { RoomEvent } from '../events/roomEvents.ts';
import type { Naming } from '../events/subjects.ts';
import type { Projected } from '../projections/projection.ts';
import { readCheckpoint } from '../projections/runner.ts';
import type { Db } from '../store/db.ts';
import { ServiceUnavailableError } from '../nats/errors.ts';
import { waitWithTimeout } from '../projections/positionWait.ts';

export interface WakeMessage {
  projection: string;
  stream: 'peeks' | 'rooms';
  seq: number;
  /** ROOMS: rooms with new events, and users whose membership changed. */
  rooms?: string[];
  members?: string[];
  /** PEEKS: devices whose peeks changed. */
  devices?: [string, string][];
}

export function wakeMessage(projection: string, stream: 'peeks' | 'rooms', seq: number, batch: Projected<unknown>[]): WakeMessage {
  const msg: WakeMessage = { projection, stream, seq };
  if (stream === 'rooms') {
    const rooms = new Set<string>();
    const members = new Set<string>();
    for (const { event } of batch as Projected<RoomEvent>[]) {
      rooms.add(event.roomId);
      if (event.pdu.type === 'm.room.member' && typeof event.pdu.state_key === 'string') members.add(event.pdu.state_key);
    }
    msg.rooms = [...rooms];
    msg.members = [...members];
  } else {
    const devices = new Map<string, [string, string]>();
    for (const { event } of batch as Projected<PeekEvent>[]) {
      if (event.peek.kind === 'device') devices.set(`${event.peek.userId}\u0000${event.peek.deviceId}`, [event.peek.userId, event.peek.deviceId]);
    }
    msg.devices = [...devices.values()];
  }
  return msg;
}

/** Rebuilds the minimal batch shapes the notifier reads from a wake message. */
export function roomBatchOf(msg: WakeMessage): Projected<RoomEvent>[] {
  const out: Projected<RoomEvent>[] = [];
  for (const roomId of msg.rooms ?? []) out.push({ seq: msg.seq, roomId, shard: 0, event: { roomId, pdu: { type: 'm.room.message' } } as unknown as RoomEvent });
  for (const userId of msg.members ?? []) out.push({ seq: msg.seq, roomId: '', shard: 0, event: { roomId: '', pdu: { type: 'm.room.member', state_key: userId } } as unknown as RoomEvent });
  return out;
}

export function peekBatchOf(msg: WakeMessage): Projected<PeekEvent>[] {
  return (msg.devices ?? []).map(([userId, deviceId]) => ({
    seq: msg.seq,
    roomId: '',
    shard: 0,
    event: { type: 'PeekRenewed', v: 1, roomId: '', peek: { kind: 'device', userId, deviceId }, at: 0 } as PeekEvent,
  }));
}

/** Positions of projections that run in another process. */
export class RemotePositions {
  private readonly positions = new Map<string, number>();
  private waiters: { projection: string; seq: number; resolve: () => void }[] = [];
  private sub?: Subscription;
  private poller?: NodeJS.Timeout;

  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    private readonly db: Db,
    private readonly projections: { name: string; stream: 'peeks' | 'rooms' }[],
    private readonly onWake: (msg: WakeMessage) => void,
  ) {}

  async start(pollMs = 250): Promise<void> {
    this.sub = this.nc.subscribe(this.naming.wakeSubject(), {
      callback: (err, m) => {
        if (err) return;
        const msg = JSON.parse(m.string()) as WakeMessage;
        this.advance(msg.projection, msg.seq);
        this.onWake(msg);
      },
    });
    await this.poll();
    this.poller = setInterval(() => void this.poll().catch(() => undefined), pollMs);
    this.poller.unref();
  }

  stop(): void {
    this.sub?.unsubscribe();
    clearInterval(this.poller);
  }

  committed(projection: string): number {
    return this.positions.get(projection) ?? 0;
  }

  /**
   * Resolves once each named projection has committed `seq`; rejects with a retryable
   * ServiceUnavailableError after `timeoutMs`, and forgets the waiter then.
   */
  async waitFor(names: string[], seq: number, timeoutMs = 120_000): Promise<void> {
    await Promise.all(
      names.map((name) =>
        this.committed(name) >= seq
          ? undefined
          : waitWithTimeout(
              (resolve) => ({ projection: name, seq, resolve }),
              (waiter) => this.waiters.push(waiter),
              (waiter) => (this.waiters = this.waiters.filter((w) => w !== waiter)),
              timeoutMs,
              () => new ServiceUnavailableError(`projection ${name} has not reached ${seq} within ${timeoutMs} ms`),
            ),
      ),
    );
  }

  private advance(projection: string, seq: number): void {
    if (seq <= this.committed(projection)) return;
    this.positions.set(projection, seq);
    const ready = this.waiters.filter((w) => w.projection === projection && w.seq <= seq);
    this.waiters = this.waiters.filter((w) => !(w.projection === projection && w.seq <= seq));
    for (const w of ready) w.resolve();
  }

  private async poll(): Promise<void> {
    for (const p of this.projections) this.advance(p.name, await readCheckpoint(this.db, p.name, p.stream));
  }
}
