// The "memory" scenario: heap per live peek and per active room actor, read in peekd's
// own process (after forced GCs) at 100,000 live peeks created through the command bus.
import { appendPeeksToLog, coresReport, fmtNum, log, round, type Row, type ScenarioResult, startPeekdChild } from './harness.ts';
import type { Scenario } from './scenario.ts';

interface Mem {
  heapUsed: number;
  heapTotal: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

export const memory: Scenario = {
  name: 'memory',
  summary: 'heap per live peek and per active room actor at 100,000 live peeks',
  async run(ctx): Promise<ScenarioResult> {
    const { services } = ctx;
    const roomCount = ctx.quick ? 100 : 1000;
    const peeks = ctx.quick ? 10_000 : 100_000;
    const perRoom = Math.ceil(peeks / roomCount);
    const server = await startPeekdChild(services, { label: 'memory' });
    const notes: string[] = [];
    try {
      const call = <T>(op: string, args: unknown = {}) => server.child.call<T>(op, args, 1_800_000);
      log(`memory: creating ${roomCount} rooms`);
      const rooms = await call<string[]>('createRooms', { count: roomCount, creator: `@bench:${server.serverName}`, concurrency: 64 });
      await call('settle');
      await call<number>('passivateAll');
      const none = await call<Mem>('heap');
      log('memory: activating every room actor');
      await call('activate', { rooms, concurrency: 64 });
      await call('settle');
      const active = await call<Mem>('heap');
      const actors = await call<number>('activeRooms');
      // A tenth of the peeks through the command bus (the real path, and its rate), the rest
      // appended straight to the log; then every actor is rebuilt from the log and holds all.
      const viaBus = Math.max(1, Math.floor(perRoom / 10));
      log(`memory: ${fmtNum(viaBus * roomCount)} device peeks through the command bus (${viaBus} per room)`);
      const made = await call<{ done: number; appendedMs: number; projectedMs: number }>('startManyPeeks', { rooms, perRoom: viaBus, concurrency: 256 });
      log(`memory: ${fmtNum((perRoom - viaBus) * roomCount)} more appended straight to the log`);
      await call<number>('passivateAll');
      const direct = await appendPeeksToLog(
        services,
        server.naming,
        rooms.map((roomId, r) => ({ roomId, peeks: Array.from({ length: perRoom - viaBus }, (_, k) => ({ userId: `@m${viaBus + k}:${server.serverName}`, deviceId: `D${r}` })) })),
      );
      const s0 = Date.now();
      await call('settle');
      const projectedMs = Date.now() - s0;
      log(`memory: re-activating ${fmtNum(roomCount)} actors from the log`);
      const t0 = Date.now();
      await call('activate', { rooms, concurrency: 64 });
      const reloadMs = Date.now() - t0;
      await call('settle');
      const withPeeks = await call<Mem>('heap');
      const live = await call<number>('livePeeks');
      if (live !== roomCount * perRoom) notes.push(`memory: ${fmtNum(roomCount * perRoom)} peeks were started but the actors hold ${fmtNum(live)}.`);

      const perActor = (active.heapUsed - none.heapUsed) / actors;
      const perPeek = (withPeeks.heapUsed - active.heapUsed) / live;
      const met = perPeek <= 2048;
      const rows: Row[] = [
        {
          scenario: 'memory',
          metric: `heap per live peek at ${fmtNum(live)} live peeks in ${fmtNum(actors)} room actors, bytes`,
          value: fmtNum(perPeek),
          ceiling: '—',
          goal: '≤ 2 KiB per peek',
          met,
        },
        {
          scenario: 'memory',
          metric: `heap per active room actor (3-event room, no peeks), bytes`,
          value: fmtNum(perActor),
          ceiling: '—',
          goal: '—',
        },
      ];
      notes.push(
        `memory: heap used ${fmtNum(none.heapUsed / 2 ** 20)} MiB with no actors, ${fmtNum(active.heapUsed / 2 ** 20)} MiB with ${fmtNum(actors)} actors, ${fmtNum(withPeeks.heapUsed / 2 ** 20)} MiB with ${fmtNum(live)} live peeks (RSS ${fmtNum(withPeeks.rss / 2 ** 20)} MiB). ` +
          `The command bus started ${fmtNum(made.done)} peeks at ${fmtNum(made.done / (made.appendedMs / 1000))}/s (256 in flight over ${fmtNum(roomCount)} rooms); re-activating ${fmtNum(roomCount)} actors from the log (${perRoom} peek events each) took ${fmtNum(reloadMs)} ms.`,
      );
      return {
        scenario: 'memory',
        rows,
        cores: coresReport(server.child.pid, undefined, { server: 'peekd', load: 'none (commands from inside peekd)' }),
        details: {
          roomCount,
          peeks,
          perRoom,
          heap: { none, active, withPeeks },
          actors,
          live,
          perActor: round(perActor),
          perPeek: round(perPeek),
          viaBus: made,
          direct: { ...direct, projectedMs },
          reloadMs,
        },
        notes,
      };
    } finally {
      await server.stop();
    }
  },
};
