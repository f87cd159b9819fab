// The projections look up the rows a batch touches by their whole key, and the deadline
// scheduler looks for due peeks about once a second. Both must cost what the batch or the due
// peeks cost, not what the table holds: syncapi_peeks keeps every ended peek (for /sync). These
// tests count the buffers Postgres touches (EXPLAIN ANALYZE) on tables far larger than what is
// looked up.
import { inArray, sql, type SQL } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dueDevicePeekRooms, nextDevicePeekDeadline } from '../../src/actors/scheduler.ts';
import { rowsOf, type Database } from '../../src/store/db.ts';
import { syncapiPeeks } from '../../src/store/schema.ts';
import { keyLookup, selectByKeys, tupleIn } from '../../src/store/sqlHelpers.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/services.ts';

const DEVICES = 64;
const ROOMS = 1000;
const NOW = 1_800_000_000_000;
/** syncapi_peeks's key, as the sync_peeks projection looks it up. */
const KEY = [syncapiPeeks.roomId, syncapiPeeks.userId, syncapiPeeks.deviceId];

/** Buffers (hit + read) the statement touched, and the rows it returned. */
async function cost(database: Database, query: SQL): Promise<{ buffers: number; rows: number }> {
  const [row] = rowsOf<Record<string, unknown>>(await database.db.execute(sql`explain (analyze, buffers, format json) ${query}`));
  const raw = Object.values(row!)[0];
  const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as { Plan: Record<string, number> }[];
  const top = plan[0]!.Plan;
  return { buffers: (top['Shared Hit Blocks'] ?? 0) + (top['Shared Read Blocks'] ?? 0), rows: top['Actual Rows']! };
}

/** The key of room r, device d. */
const key = (r: number, d: number): [string, string, string] => [`!r${r}:hs`, `@u${d}:hs`, `D${d}`];

/**
 * A database of its own with 64,000 peeks: every device has peeked 1,000 rooms. Rooms 1–10
 * are live for every device (rooms 1–5 due before NOW, 6–10 after it); the rest ended long
 * ago. `analysedSmall`: the table is analysed when it holds one room only, and its ended
 * peeks are updated once after — a server whose table grew after Postgres last looked.
 * Otherwise the table is never analysed — a fresh server under its first load.
 */
function peeksFixture(analysedSmall: boolean): { database: () => Database } {
  let test: TestDatabase;
  let database: Database;
  beforeAll(async () => {
    test = await createTestDatabase();
    database = await test.open();
    const insertRooms = (from: number, to: number) =>
      database.db.execute(
        sql.raw(`insert into syncapi_peeks (room_id, user_id, device_id, shard, started_seq, started_at, renewed_at, expires_at, room_seq, updated_seq, ended_seq, ended_at, end_reason)
          select '!r' || r || ':hs', '@u' || d || ':hs', 'D' || d, r % 64, r * 100 + d, ${NOW - 7_200_000}, ${NOW - 7_200_000},
            case when r <= 5 then ${NOW - 1000} - r when r <= 10 then ${NOW + 60_000} + r * 100 + d else ${NOW - 3_600_000} end,
            1, r * 100 + d,
            case when r <= 10 then null else r * 100 + d + 1 end, case when r <= 10 then null else ${NOW - 3_600_000} end, case when r <= 10 then null else 'unpeek' end
          from generate_series(${from}, ${to}) r, generate_series(1, ${DEVICES}) d`),
      );
    if (analysedSmall) {
      await insertRooms(1, 1);
      await database.db.execute(sql`analyze syncapi_peeks`);
      await insertRooms(2, ROOMS);
      await database.db.execute(sql`update syncapi_peeks set renewed_at = renewed_at + 1 where ended_seq is not null`);
    } else {
      await insertRooms(1, ROOMS);
    }
  }, 120_000);
  afterAll(async () => {
    await database?.close();
    await test?.drop();
  });
  return { database: () => database };
}

describe('projection key lookups (selectByKeys), on a table analysed when it was small', () => {
  // With such statistics the planner took the old two-column device index for a whole-key
  // lookup: 563–619 buffers for the 20 keys below, against 116–117 now.
  const { database } = peeksFixture(true);

  it('return exactly the rows of the keys asked for, mapped as drizzle’s select maps them', async () => {
    const keys = [key(3, 7), key(500, 1), key(1000, 64), key(1001, 1), ['!r2:hs', '@u9:hs', 'D8']];
    const got = await selectByKeys(database().db, syncapiPeeks, KEY, keys);
    const expected = await database().db.select().from(syncapiPeeks).where(tupleIn(KEY, keys));
    const order = (rows: { roomId: string; deviceId: string }[]) => [...rows].sort((a, b) => (a.roomId + a.deviceId).localeCompare(b.roomId + b.deviceId));
    expect(got).toHaveLength(3); // room 1001 and the mismatched device do not exist
    expect(order(got)).toEqual(order(expected));
    const live = got.find((r) => r.roomId === '!r3:hs')!;
    expect(live).toMatchObject({ userId: '@u7:hs', deviceId: 'D7', shard: 3, startedSeq: 307, expiresAt: NOW - 1003, endedSeq: null, endReason: null });
    expect(typeof live.startedAt).toBe('number');
    expect(got.find((r) => r.roomId === '!r500:hs')).toMatchObject({ endedSeq: 50_002, endReason: 'unpeek' });
    expect(await selectByKeys(database().db, syncapiPeeks, KEY, [])).toEqual([]);
  });

  it('touch a few buffers per key, not every peek of the device nor the whole table', async () => {
    const keys = Array.from({ length: 20 }, (_, i) => key(1 + ((i * 97) % ROOMS), 1 + ((i * 13) % DEVICES)));
    const c = await cost(database(), keyLookup(syncapiPeeks, KEY, keys));
    expect(c.rows).toBe(20);
    // An index probe is a few pages; each device's 1,000 peeks span dozens of pages, the
    // table ~1,500.
    expect(c.buffers).toBeLessThanOrEqual(20 * 8);
  });
});

describe('the deadline scheduler’s looks at device peeks, on a table never analysed', () => {
  const { database } = peeksFixture(false);

  const shardSets: [string, SQL | undefined][] = [
    ['every shard (one process)', undefined],
    [
      'half the shards (a sharded deployment)',
      inArray(
        syncapiPeeks.shard,
        Array.from({ length: 32 }, (_, i) => i * 2),
      ),
    ],
  ];

  for (const [label, shards] of shardSets) {
    it(`find the due rooms and the next deadline from the live peeks alone: ${label}`, async () => {
      const inShards = (r: number) => shards === undefined || (r % 64) % 2 === 0;
      const due = (await dueDevicePeekRooms(database().db, NOW, shards)).map((r) => r.roomId).sort();
      expect(due).toEqual(
        [1, 2, 3, 4, 5]
          .filter(inShards)
          .map((r) => `!r${r}:hs`)
          .sort(),
      );
      const [next] = await nextDevicePeekDeadline(database().db, shards);
      // Due peeks are live too: the earliest deadline is a due one.
      expect(Number(next!.at)).toBe(NOW - 1000 - Math.max(...[1, 2, 3, 4, 5].filter(inShards)));

      const dueCost = await cost(database(), dueDevicePeekRooms(database().db, NOW, shards).getSQL());
      const nextCost = await cost(database(), nextDevicePeekDeadline(database().db, shards).getSQL());
      // 640 live peeks among 64,000: the looks read the due ones (67 buffers measured), never
      // the history (with an index on every peek's deadline: 1,090–1,180 buffers per look).
      expect(dueCost.buffers).toBeLessThanOrEqual(150);
      expect(nextCost.buffers).toBeLessThanOrEqual(150);
    });
  }
});
