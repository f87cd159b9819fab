// The processes of the scale-out scenario (bench/scaleout.ts), started
// through bench/child.mjs (`Child.start({ module: 'scaleworker' })`) and driven over IPC (bench/ipc.ts):
//  - SCALEOUT_MODE=peekd: a real peekd with the roles split (PEEKD_ROLES), configured from
//    the environment like `peekd serve`;
//  - SCALEOUT_MODE=load: the load side, which sends room commands through a NatsCommandBus
//    (as an HTTP process with the roles split would), without HTTP.
import { randomBytes, randomUUID } from 'node:crypto';
import type { PduDraft, RoomCommand } from '../src/actors/commands.ts';
import { RetryingCommandBus } from '../src/actors/commandBus.ts';
import { NatsCommandBus } from '../src/cluster/natsCommandBus.ts';
import { loadConfig } from '../src/config.ts';
import { Naming } from '../src/events/subjects.ts';
import { connectNats } from '../src/nats/connection.ts';
import { streamLastSeq } from '../src/projections/rebuild.ts';
import { startPeekd } from '../src/server.ts';
import { commonHandlers, pool } from './childCommon.ts';
import { serveIpc } from './ipc.ts';

const mode = process.env.SCALEOUT_MODE;

if (mode === 'peekd') {
  const config = loadConfig(process.env);
  const peekd = await startPeekd(config);
  serveIpc({
    ...commonHandlers(() => peekd.close()),
    info: () => ({ pid: process.pid, roles: config.roles, hostId: peekd.hostId }),
    /** The shards this room host holds leases for now (empty without the rooms role). */
    shards: () => peekd.leases?.shards ?? [],
    /** How many shards it holds now (sampled through the measured window). */
    firm: () => (peekd.leases?.shards ?? []).length,
    /** Projections process: waits until every runner it holds has committed all now in its stream. */
    settle: async ({ timeoutMs = 300_000 }: { timeoutMs?: number } = {}) => {
      const [peeks, rooms] = await Promise.all([streamLastSeq(peekd.nc, peekd.naming, 'peeks'), streamLastSeq(peekd.nc, peekd.naming, 'rooms')]);
      const last = { peeks, rooms };
      await Promise.all([...peekd.projections.values()].map((r) => r.waitFor(last[r.projection.stream], timeoutMs)));
      return last;
    },
  });
} else if (mode === 'load') {
  const natsUrl = process.env.NATS_URL;
  const prefix = process.env.PEEKD_STREAM_PREFIX ?? '';
  const shards = Number(process.env.PEEKD_SHARDS ?? '64');
  const leaseTtlMs = Number(process.env.PEEKD_LEASE_TTL_MS ?? '10000');
  if (!natsUrl) throw new Error('scale-out load: NATS_URL is required');
  const nc = await connectNats(natsUrl, 'peekd-bench scale-out load');
  const naming = new Naming(prefix, shards);
  // What an HTTP process with the roles split uses: one NATS request per attempt, retried
  // with the same command ID while a shard changes owner.
  let retries = 0;
  const bus = new RetryingCommandBus(new NatsCommandBus(nc, naming), leaseTtlMs + 5_000, () => {
    retries++;
  });
  const send = (command: RoomCommand) => bus.send(command, randomUUID());

  const benchRoomDrafts = (creator: string): PduDraft[] => [
    { type: 'm.room.create', sender: creator, state_key: '', content: { creator, room_version: '10' } },
    { type: 'm.room.member', sender: creator, state_key: creator, content: { membership: 'join' } },
    { type: 'm.room.history_visibility', sender: creator, state_key: '', content: { history_visibility: 'world_readable' } },
  ];

  const pct = (sorted: Float64Array, p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!);

  serveIpc({
    ...commonHandlers(async () => {
      await nc.drain();
    }),
    /** Creates `count` world_readable rooms through the bus (CreateRoom, as bench/server.ts does); returns their IDs. */
    createRooms: async ({ count, serverName, concurrency = 128 }: { count: number; serverName: string; concurrency?: number }) => {
      const creator = `@bench:${serverName}`;
      const ids = Array.from({ length: count }, () => `!${randomBytes(9).toString('base64url')}:${serverName}`);
      await pool(ids, concurrency, (roomId) => send({ type: 'CreateRoom', roomId, roomVersion: '10', events: benchRoomDrafts(creator) }));
      return ids;
    },
    /**
     * `concurrency` workers, each in a loop: take the next (room, device), peek, renew
     * (peek again), unpeek; for `durationMs`, and (`coverAll`, the warm-up) at least until
     * every room was taken once, so every actor is loaded. Counts commands answered and their latency.
     */
    cycle: async ({
      rooms,
      serverName,
      devices = 64,
      concurrency = 64,
      durationMs,
      coverAll = false,
    }: {
      rooms: string[];
      serverName: string;
      devices?: number;
      concurrency?: number;
      durationMs: number;
      coverAll?: boolean;
    }) => {
      let k = 0;
      let ok = 0;
      let errors = 0;
      let lastError: string | undefined;
      const lat: number[] = [];
      const retries0 = retries;
      const t0 = process.hrtime.bigint();
      const end = Date.now() + durationMs;
      const timed = async (command: RoomCommand) => {
        const s = process.hrtime.bigint();
        try {
          await send(command);
          ok++;
          lat.push(Number(process.hrtime.bigint() - s) / 1e6);
          return true;
        } catch (err) {
          errors++;
          lastError = (err as Error).message;
          return false;
        }
      };
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (Date.now() < end || (coverAll && k < rooms.length)) {
            const i = k++;
            const roomId = rooms[i % rooms.length]!;
            const d = i % devices;
            const peek = { roomId, userId: `@s${d}:${serverName}`, deviceId: `SCALE${d}` };
            if (!(await timed({ type: 'StartDevicePeek', ...peek }))) continue;
            await timed({ type: 'StartDevicePeek', ...peek });
            await timed({ type: 'StopDevicePeek', ...peek, reason: 'unpeeked' });
          }
        }),
      );
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const sorted = Float64Array.from(lat).sort();
      const mean = lat.length === 0 ? NaN : lat.reduce((a, b) => a + b, 0) / lat.length;
      return {
        seconds,
        ok,
        errors,
        lastError,
        retries: retries - retries0,
        perSecond: ok / seconds,
        latency: { p50: pct(sorted, 50), p90: pct(sorted, 90), p99: pct(sorted, 99), mean, max: sorted.length ? sorted[sorted.length - 1]! : NaN },
      };
    },
  });
} else {
  throw new Error(`scaleworker: SCALEOUT_MODE must be peekd or load, got ${mode}`);
}
