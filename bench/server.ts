// The server side of the bench: a real peekd (startPeekd, configured from the environment
// like `peekd serve`) in its own process, plus a few hooks the bench drives over IPC —
// internal commands for setup, heap readings, notifier and actor counts, CPU profiles.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { PduDraft, RoomCommand } from '../src/actors/commands.ts';
import { loadConfig } from '../src/config.ts';
import { selectReadModels, streamLastSeq, verifyProjections } from '../src/projections/rebuild.ts';
import { startPeekd } from '../src/server.ts';
import { commonHandlers, nowNs, pool } from './childCommon.ts';
import { serveIpc } from './ipc.ts';
import { installTracing, traceStart, traceStop } from './trace.ts';

const config = loadConfig(process.env);
const peekd = await startPeekd(config);
const { bus, notifier } = peekd;
const serverName = config.serverName;
if (!peekd.host) throw new Error('the bench runs peekd with every role in one process (it needs the local actor host)');
const host = peekd.host;
installTracing(peekd);

/** A world_readable room in three events: create, the creator's join, history visibility. */
function benchRoomDrafts(creator: string): PduDraft[] {
  return [
    { type: 'm.room.create', sender: creator, state_key: '', content: { creator, room_version: '10' } },
    { type: 'm.room.member', sender: creator, state_key: creator, content: { membership: 'join' } },
    { type: 'm.room.history_visibility', sender: creator, state_key: '', content: { history_visibility: 'world_readable' } },
  ];
}

/** Waits until every projection runner has committed everything now in its stream. */
async function settle(): Promise<{ peeks: number; rooms: number }> {
  const [peeks, rooms] = await Promise.all([streamLastSeq(peekd.nc, peekd.naming, 'peeks'), streamLastSeq(peekd.nc, peekd.naming, 'rooms')]);
  const last = { peeks, rooms };
  await Promise.all([...peekd.projections.values()].map((r) => r.waitFor(last[r.projection.stream])));
  return last;
}

async function send(command: RoomCommand) {
  return bus.send(command);
}

let loopDelay: IntervalHistogram | undefined;
let loopCpu: NodeJS.CpuUsage | undefined;
/** hrtime (ns) at which peekd ended each /sync response (res.end), while recording. */
let syncFinishes: bigint[] | undefined;
peekd.http?.app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
  if (!req.url?.includes('/sync')) return;
  const end = res.end;
  res.end = function (this: typeof res, ...args: unknown[]) {
    syncFinishes?.push(process.hrtime.bigint());
    return (end as (...a: unknown[]) => typeof res).apply(this, args);
  } as typeof res.end;
});

serveIpc({
  /** Event-loop delay over a window: how long ready work waited for the main thread. */
  loopStart: () => {
    loopDelay = monitorEventLoopDelay({ resolution: 5 });
    loopDelay.enable();
    loopCpu = process.cpuUsage();
    syncFinishes = [];
    return true;
  },
  /** Event-loop delay, this process's CPU seconds, and when its /sync responses left (ns). */
  loopStop: () => {
    const h = loopDelay;
    loopDelay = undefined;
    if (!h) return null;
    h.disable();
    const cpu = process.cpuUsage(loopCpu);
    const finishes = (syncFinishes ?? []).map(String);
    syncFinishes = undefined;
    return { p50Ms: h.percentile(50) / 1e6, p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6, meanMs: h.mean / 1e6, cpuSeconds: (cpu.user + cpu.system) / 1e6, finishes };
  },

  ...commonHandlers(() => peekd.close()),
  info: () => ({ url: peekd.url, serverName, pid: process.pid }),

  /** Creates `count` world_readable rooms through the command bus; returns their IDs. */
  createRooms: async ({ count, creator, concurrency = 32 }: { count: number; creator: string; concurrency?: number }) => {
    const ids = Array.from({ length: count }, () => `!${randomBytes(9).toString('base64url')}:${serverName}`);
    await pool(ids, concurrency, (roomId) => send({ type: 'CreateRoom', roomId, roomVersion: '10', events: benchRoomDrafts(creator) }));
    await settle();
    return ids;
  },

  /** Appends `count` events to a room, `perCommand` per SendEvents; state events when `stateKeyPrefix` is set. */
  sendEvents: async ({
    roomId,
    sender,
    count,
    perCommand = 1,
    stateKeyPrefix,
    padBytes = 64,
  }: {
    roomId: string;
    sender: string;
    count: number;
    perCommand?: number;
    stateKeyPrefix?: string;
    padBytes?: number;
  }) => {
    const t0 = process.hrtime.bigint();
    let last = 0;
    for (let i = 0; i < count; i += perCommand) {
      const events: PduDraft[] = [];
      for (let j = i; j < Math.min(count, i + perCommand); j++) {
        events.push(
          stateKeyPrefix !== undefined
            ? { type: 'org.peekd.bench.state', sender, state_key: `${stateKeyPrefix}${j}`, content: { n: j, pad: 'x'.repeat(padBytes) } }
            : { type: 'm.room.message', sender, content: { msgtype: 'm.text', body: `bench message ${j} ${'x'.repeat(padBytes)}` } },
        );
      }
      const r = await send({ type: 'SendEvents', roomId, events });
      last = r.roomEvents.at(-1)?.seq ?? last;
    }
    const appendedNs = Number(process.hrtime.bigint() - t0);
    await peekd.waitForProjections('rooms', last);
    return { lastSeq: last, appendedMs: appendedNs / 1e6, projectedMs: Number(process.hrtime.bigint() - t0) / 1e6 };
  },

  /** One message, timed: before the command, after JetStream acked the append, after the sync projection committed it. */
  appendTimed: async ({ roomId, sender }: { roomId: string; sender: string }) => {
    const tStart = nowNs();
    const r = await send({ type: 'SendEvents', roomId, events: [{ type: 'm.room.message', sender, content: { msgtype: 'm.text', body: `wake ${tStart}` } }] });
    const tAck = nowNs();
    const seq = r.roomEvents.at(-1)!.seq;
    await peekd.waitForProjections('rooms', seq);
    const tProjected = nowNs();
    return { tStart, tAck, tProjected, seq };
  },

  /** Starts device peeks: every (room, device) pair given, through the command bus. */
  startPeeks: async ({ pairs, concurrency = 64 }: { pairs: { roomId: string; userId: string; deviceId: string }[]; concurrency?: number }) => {
    let last = 0;
    await pool(pairs, concurrency, async (p) => {
      const r = await send({ type: 'StartDevicePeek', ...p });
      last = Math.max(last, r.peekEvents.at(-1)?.seq ?? 0);
    });
    await peekd.waitForProjections('peeks', last);
    return { lastSeq: last };
  },

  /**
   * `perRoom` synthetic devices peek each of `rooms` (memory scenario): device j of room r
   * is @m<j>:server / D<r>; `concurrency` commands in flight across rooms.
   */
  startManyPeeks: async ({ rooms, perRoom, concurrency = 256 }: { rooms: string[]; perRoom: number; concurrency?: number }) => {
    const total = rooms.length * perRoom;
    let last = 0;
    let done = 0;
    const t0 = Date.now();
    const items = Array.from({ length: total }, (_, i) => i);
    // Interleave rooms so the commands in flight hit different actors.
    await pool(items, concurrency, async (i) => {
      const roomId = rooms[i % rooms.length]!;
      const j = Math.floor(i / rooms.length);
      const r = await send({ type: 'StartDevicePeek', roomId, userId: `@m${j}:${serverName}`, deviceId: `D${i % rooms.length}` });
      last = Math.max(last, r.peekEvents.at(-1)?.seq ?? 0);
      done++;
    });
    const appendedMs = Date.now() - t0;
    await peekd.waitForProjections('peeks', last);
    return { done, lastSeq: last, appendedMs, projectedMs: Date.now() - t0 };
  },

  /** Users with one device each, made in-process (no password: no scrypt); returns their sessions. */
  createSessions: async ({ count, prefix, concurrency = 32 }: { count: number; prefix: string; concurrency?: number }) => {
    const { accounts } = peekd.client;
    return pool(
      Array.from({ length: count }, (_, i) => i),
      concurrency,
      async (i) => {
        const userId = await accounts.register(`${prefix}${i}`, undefined);
        const s = await accounts.createSession(userId, undefined);
        return { userId: s.userId, deviceId: s.deviceId, token: s.accessToken };
      },
    );
  },

  /** Sends a Tick to each room: activates passivated actors (reload from the log). */
  activate: async ({ rooms, concurrency = 64 }: { rooms: string[]; concurrency?: number }) => {
    await pool(rooms, concurrency, (roomId) => send({ type: 'Tick', roomId }));
    return host.activeRooms;
  },

  passivateAll: () => host.passivateIdle(Date.now() + 1e12),
  activeRooms: () => host.activeRooms,
  livePeeks: ({ rooms }: { rooms?: string[] } = {}) => {
    // The actors' own view: how many live peeks the active actors hold.
    let n = 0;
    const entries = (host as unknown as { rooms: Map<string, { actor: { current: { peeks: Map<string, unknown> } } }> }).rooms;
    for (const [roomId, e] of entries) if (!rooms || rooms.includes(roomId)) n += e.actor.current.peeks.size;
    return n;
  },
  waiting: () => notifier.waiting,
  settle,
  /** `peekd verify all` after the load: every read model rebuilt aside and compared with the live one. */
  verify: async () => {
    await settle();
    const results = await verifyProjections({ db: peekd.database.db, nc: peekd.nc, naming: peekd.naming }, selectReadModels('all'));
    return results.map((r) => ({ projection: r.projection, equal: r.equal }));
  },
  traceStart,
  traceStop,

  /**
   * Sequential peek / renew / unpeek commands on one room through the command bus only
   * (no HTTP, no wait for projections): the actor's own ceiling, for the breakdown.
   */
  busLoop: async ({ roomId, userId, deviceId, durationMs }: { roomId: string; userId: string; deviceId: string; durationMs: number }) => {
    const end = Date.now() + durationMs;
    let n = 0;
    const t0 = process.hrtime.bigint();
    while (Date.now() < end) {
      await send({ type: 'StartDevicePeek', roomId, userId, deviceId });
      await send({ type: 'StartDevicePeek', roomId, userId, deviceId });
      await send({ type: 'StopDevicePeek', roomId, userId, deviceId, reason: 'unpeeked' });
      n += 3;
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    await settle();
    return { commands: n, perSecond: n / s };
  },
});
