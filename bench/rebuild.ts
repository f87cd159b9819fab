// The "rebuild" scenario: events per second replayed (peekd's replayProjection: shadow
// tables, catch-up, atomic swap) into the sync and federation projections, against
// min(raw ordered-consumer read rate, raw batched Postgres INSERT rate) measured on the
// same streams and the same database in the same run.
import { coresReport, cpuBetween, cpuSample, fmtNum, log, profilePath, round, startLoadChild, uniqueName, type Row, type ScenarioResult } from './harness.ts';
import { describeProfile, profiled } from './profile.ts';
import { profiles, type Scenario } from './scenario.ts';

interface Rate {
  seconds: number;
  perSecond: number;
}

/** Every projection replays at least this share of min(raw read, raw insert). */
const GOAL_RATIO = 0.5;

const TARGETS = [
  { projection: 'sync_rooms', stream: 'rooms', table: 'syncapi_room_events', label: 'sync (ROOMS → timeline, current state)' },
  { projection: 'sync_peeks', stream: 'peeks', table: 'syncapi_peeks', label: 'sync (PEEKS → syncapi_peeks)' },
  { projection: 'federation_peeks', stream: 'peeks', table: 'federationsender_inbound_peeks', label: 'federation (PEEKS → inbound/outbound peeks)' },
] as const;

export const rebuild: Scenario = {
  name: 'rebuild',
  summary: 'events per second replayed into the sync and federation projections vs min(raw ordered-consumer read, raw batched INSERT)',
  async run(ctx): Promise<ScenarioResult> {
    const { services } = ctx;
    const roomEvents = ctx.quick ? 10_000 : 80_000;
    const peekEvents = ctx.quick ? 10_000 : 80_000;
    const db = await services.database();
    const dataDir = services.tempDir('rebuild-');
    const load = await startLoadChild(services, 'rebuild');
    const notes: string[] = [];
    try {
      log(`rebuild: writing ${roomEvents} ROOMS and ${peekEvents} PEEKS events`);
      const gen = await load.call<{ roomEvents: number; peekEvents: number; roomBytes: number; peekBytes: number; ms: number }>(
        'rebuildGenerate',
        { natsUrl: services.natsUrl, databaseUrl: db.url, dataDir, prefix: `${uniqueName('rb')}_`, rooms: 1000, roomEvents, peekEvents },
        900_000,
      );
      const events = { rooms: gen.roomEvents, peeks: gen.peekEvents };
      log('rebuild: ceilings — ordered-consumer reads');
      const read = {
        rooms: await load.call<Rate & { messages: number }>('rebuildRawRead', { kind: 'rooms' }),
        peeks: await load.call<Rate & { messages: number }>('rebuildRawRead', { kind: 'peeks' }),
      };
      log('rebuild: ceilings — batched INSERTs');
      const insert: Record<string, Rate & { rows: number; methods: Record<string, number> }> = {};
      for (const t of TARGETS) insert[t.table] = await load.call<Rate & { rows: number; methods: Record<string, number> }>('rebuildRawInsert', { table: t.table }, 900_000);

      const rows: Row[] = [];
      const replays: Record<string, unknown> = {};
      let worst: { projection: string; ratio: number } | undefined;
      for (const t of TARGETS) {
        log(`rebuild: replaying ${t.projection}`);
        const c0 = cpuSample();
        const w0 = Date.now();
        const r = await load.call<Rate & { events: number; rows: number }>('rebuildReplay', { projection: t.projection }, 1_800_000);
        const cpu = cpuBetween(c0, cpuSample(), { replay: load.pid, bench: process.pid }, (Date.now() - w0) / 1000);
        // Events, not positions: the generator's count, which the replay's own (the stream's messages) must match.
        const n = events[t.stream];
        if (r.events !== n) throw new Error(`rebuild ${t.projection}: replayed ${r.events} events, ${n} were written`);
        // Ceiling in events/s: reading the whole stream, or inserting this projection's rows for it.
        const readCeiling = n / read[t.stream].seconds;
        const insertCeiling = n / insert[t.table]!.seconds;
        const ceiling = Math.min(readCeiling, insertCeiling);
        const ratio = r.perSecond / ceiling;
        replays[t.projection] = { ...r, readCeiling, insertCeiling, ceiling, ratio, cpuCoresBusy: cpu };
        if (!worst || ratio < worst.ratio) worst = { projection: t.projection, ratio };
        rows.push({
          scenario: 'rebuild',
          metric: `${t.label}, events/s`,
          value: fmtNum(r.perSecond),
          ceiling: `${fmtNum(ceiling)} = min(read ${fmtNum(readCeiling)}, insert ${fmtNum(insertCeiling)})`,
          ratio: round(ratio, 3),
          goal: `ratio ≥ ${GOAL_RATIO}`,
          met: ratio >= GOAL_RATIO,
        });
        notes.push(
          `rebuild ${t.projection}: ${fmtNum(n)} events in ${r.seconds.toFixed(1)} s; CPU busy in cores: ${Object.entries(cpu)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}.`,
        );
      }
      let profile;
      if (worst && profiles(ctx, worst.ratio < GOAL_RATIO)) {
        log(`rebuild: ${worst.ratio < GOAL_RATIO ? 'goal missed on' : 'the slowest is'} ${worst.projection} — profiling a second replay`);
        const p = await profiled(load, profilePath(`rebuild-${worst.projection}`), () => load.call('rebuildReplay', { projection: worst!.projection }, 1_800_000));
        profile = p.summary;
        notes.push(describeProfile(`rebuild ${worst.projection} (replaying process)`, p.summary));
      }
      return {
        scenario: 'rebuild',
        rows,
        cores: coresReport(load.pid, undefined, { server: 'replay with peekd code (no separate load)', load: '' }),
        details: { generated: gen, read, insert, replays, profile },
        notes,
      };
    } finally {
      await load.call('rebuildCleanup').catch(() => undefined);
      await load.stop();
      await db.drop();
    }
  },
};
