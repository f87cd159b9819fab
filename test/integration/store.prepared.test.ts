// The Postgres client prepares statements (src/store/db.ts `preparing`): a statement seen
// before on a connection costs one round trip and pipelines with those issued beside it,
// instead of a Parse/Describe round trip before each execution. These tests check that it
// happens, that long IN lists are left unprepared (a connection would keep one statement per
// list length), and that a prepared statement follows a table replaced under it, as a
// replay's swap does.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREPARE_MAX_PARAMS, rowsOf, type Database } from '../../src/store/db.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/services.ts';

describe('statements on the Postgres client', () => {
  let test: TestDatabase;
  let database: Database;

  beforeAll(async () => {
    test = await createTestDatabase();
    database = await test.open();
  });

  afterAll(async () => {
    await database?.close();
    await test?.drop();
  });

  /** Statements prepared on the transaction's connection whose text contains `marker`. */
  async function preparedIn(tx: { execute(q: ReturnType<typeof sql>): PromiseLike<unknown> }, marker: string): Promise<number> {
    const rows = rowsOf<{ n: number }>(
      await tx.execute(sql`select count(*)::int as n from pg_prepared_statements where statement like ${`%${marker}%`} and statement not like '%pg_prepared_statements%'`),
    );
    return Number(rows[0]!.n);
  }

  it('are prepared once per connection when they have few parameters, and answer as before', async () => {
    const { db } = database;
    await db.transaction(async (tx) => {
      const answers: number[] = [];
      for (const n of [1, 2, 3]) {
        const rows = rowsOf<{ few_params_marker: number }>(await tx.execute(sql`select ${n}::int * 10 as few_params_marker`));
        answers.push(Number(rows[0]!.few_params_marker));
      }
      expect(answers).toEqual([10, 20, 30]);
      // PGlite runs in the process, over no connection: nothing to prepare there.
      expect(await preparedIn(tx, 'few_params_marker')).toBe(database.kind === 'postgres' ? 1 : 0);
    });
  });

  it('are left unprepared when they have more parameters than PREPARE_MAX_PARAMS (IN lists)', async () => {
    const { db } = database;
    const values = Array.from({ length: PREPARE_MAX_PARAMS + 1 }, (_, i) => i);
    await db.transaction(async (tx) => {
      const list = sql.join(
        values.map((v) => sql`${v}::int`),
        sql`, `,
      );
      const rows = rowsOf<{ many_params_marker: number }>(await tx.execute(sql`select count(*)::int as many_params_marker from unnest(array[${list}]) v`));
      expect(Number(rows[0]!.many_params_marker)).toBe(values.length);
      expect(await preparedIn(tx, 'many_params_marker')).toBe(0);
    });
  });

  it('can be wrapped from outside, as the bench tracer does, and still prepare', async () => {
    const { db } = database;
    type Fn = (...args: unknown[]) => unknown;
    const client = (db as unknown as { $client: Record<string, Fn> }).$client;
    const seen: string[] = [];
    const original = { unsafe: client.unsafe!, begin: client.begin };
    for (const name of ['unsafe', 'begin'] as const) {
      const inner = client[name];
      if (typeof inner !== 'function') continue;
      client[name] = (...args: unknown[]) => {
        seen.push(name);
        return inner(...args);
      };
    }
    try {
      await db.transaction(async (tx) => {
        for (const n of [1, 2]) {
          const rows = rowsOf<{ wrapped_marker: number }>(await tx.execute(sql`select ${n}::int as wrapped_marker`));
          expect(Number(rows[0]!.wrapped_marker)).toBe(n);
        }
        expect(await preparedIn(tx, 'wrapped_marker')).toBe(database.kind === 'postgres' ? 1 : 0);
      });
      const rows = rowsOf<{ outside: number }>(await db.execute(sql`select ${7}::int as outside`));
      expect(Number(rows[0]!.outside)).toBe(7);
      if (database.kind === 'postgres') {
        expect(seen).toContain('begin');
        expect(seen).toContain('unsafe');
      }
    } finally {
      client.unsafe = original.unsafe;
      if (original.begin) client.begin = original.begin;
    }
  });

  it('read the table that replaced the one they were prepared against (a replay swap)', async () => {
    const { db } = database;
    await db.execute(sql`create table swap_probe (a int)`);
    await db.execute(sql`insert into swap_probe values (1)`);
    const read = async () => rowsOf<{ a: number }>(await db.execute(sql`select a from swap_probe where a > ${0} order by a`)).map((r) => Number(r.a));
    // Enough times that every connection of the pool has it prepared.
    for (let i = 0; i < 12; i++) expect(await read()).toEqual([1]);
    await db.execute(sql`create table swap_probe_new (a int)`);
    await db.execute(sql`insert into swap_probe_new values (2), (3)`);
    await db.transaction(async (tx) => {
      await tx.execute(sql`alter table swap_probe rename to swap_probe_old`);
      await tx.execute(sql`alter table swap_probe_new rename to swap_probe`);
    });
    for (let i = 0; i < 12; i++) expect(await read()).toEqual([2, 3]);
    await db.execute(sql`drop table swap_probe_old`);
    for (let i = 0; i < 12; i++) expect(await read()).toEqual([2, 3]);
  });
});
