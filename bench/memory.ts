// The "memory" scenario: heap per live peek and per active room actor, read in peekd's
// own process (after forced GCs) at 100,000 live peeks created through the command bus.
import { coresReport, fmtNum, log, round, type Row, type ScenarioResult, startPeekdChild } from './harness';
import type { Scenario } from './scenario';

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
      log(`memory: ${fmtNum(peeks)} device peeks through the command bus (${perRoom} per room)`);
      const made = await call<{ done: number; appendedMs: number; projectedMs: number }>('startManyPeeks', { rooms, perRoom, concurrency: 256 });
      await call('settle');
      const withPeeks = await call<Mem>('heap');
      const live = await call<number>('livePeeks');
      // The same peeks again after every actor is rebuilt from the log (activation path).
      await call<number>('passivateAll');
      const t0 = Date.now();
      await call('activate', { rooms, concurrency: 64 });
      const reloadMs = Date.now() - t0;
      await call('settle');
      const reloaded = await call<Mem>('heap');
      const liveAfter = await call<number>('livePeeks');

      const perActor = (active.heapUsed - none.heapUsed) / actors;
      const perPeek = (withPeeks.heapUsed - active.heapUsed) / live;
      const perPeekReloaded = (reloaded.heapUsed - active.heapUsed) / liveAfter;
      const met = perPeek <= 2048 && perPeekReloaded <= 2048;
      const rows: Row[] = [
        {
          scenario: 'memory',
          metric: `heap per live peek at ${fmtNum(live)} live peeks, bytes (after reload from the log)`,
          value: `${fmtNum(perPeek)} (${fmtNum(perPeekReloaded)})`,
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
        `memory: heap used ${fmtNum(none.heapUsed / 2 ** 20)} MiB with no actors, ${fmtNum(active.heapUsed / 2 ** 20)} MiB with ${fmtNum(actors)} actors, ${fmtNum(withPeeks.heapUsed / 2 ** 20)} MiB with ${fmtNum(live)} live peeks (RSS ${fmtNum(withPeeks.rss / 2 ** 20)} MiB); ` +
          `${fmtNum(peeks)} peeks were appended in ${fmtNum(made.appendedMs / 1000)} s through the bus (${fmtNum(made.done / (made.appendedMs / 1000))}/s, 256 in flight); re-activating ${fmtNum(roomCount)} actors from the log took ${fmtNum(reloadMs)} ms.`,
      );
      if (live !== made.done) notes.push(`memory: ${made.done} peeks were started but the actors hold ${live}.`);
      return {
        scenario: 'memory',
        rows,
        cores: coresReport(server.child.pid, undefined, { server: 'peekd', load: 'none (commands from inside peekd)' }),
        details: { roomCount, peeks, perRoom, heap: { none, active, withPeeks, reloaded }, actors, live, liveAfter, perActor: round(perActor), perPeek: round(perPeek), perPeekReloaded: round(perPeekReloaded), made, reloadMs },
        notes,
      };
    } finally {
      await server.stop();
    }
  },
};
