import { getTableColumns, getTableName, sql, type SQL } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import { rowsOf } from './db.ts';

/**
 * `(a, b) IN (select … from jsonb_to_recordset($1))` for composite keys: the keys travel as
 * one JSON parameter (a literal list of thousands of tuples is slow to plan, and too deep
 * for PGlite's parser).
 */
export function tupleIn(columns: PgColumn[], keys: unknown[][]): SQL {
  const cols = sql.join(
    columns.map((c) => sql`${c}`),
    sql`, `,
  );
  return sql`(${cols}) in (${keyRecordset(columns, keys)})`;
}

/** `keys` as rows `k0, k1, …` typed like `columns`, from one JSON parameter. */
function keyRecordset(columns: PgColumn[], keys: unknown[][]): SQL {
  const defs: [string, string][] = columns.map((c, i) => [`k${i}`, c.getSQLType()]);
  const rows = keys.map((k) => Object.fromEntries(k.map((v, i) => [`k${i}`, v])));
  return jsonRecordset(rows, defs);
}

/** The statement `selectByKeys` runs (exported for tests that look at its plan). */
export function keyLookup(table: PgTable, keyColumns: PgColumn[], keys: unknown[][]): SQL {
  const match = sql.join(
    keyColumns.map((c, i) => sql`t.${sql.identifier(c.name)} = x.${sql.identifier(`k${i}`)}`),
    sql` and `,
  );
  return sql`select t.* from (${keyRecordset(keyColumns, keys)}) x cross join lateral (select * from ${table} t where ${match} limit 1) t`;
}

/**
 * The rows of `table` whose key (`keyColumns`, in order) is one of `keys`: one index probe per
 * key. `tupleIn` leaves the join to the planner, which estimates any jsonb_to_recordset at 100
 * rows: on a table not yet analysed, or analysed when it was small, it read every peek of a
 * device per key, or the whole table per batch (measured on the many-rooms bench: 9,000
 * buffer reads and 17–22 ms for 100 keys against a table of 10,000 peeks). A lateral
 * subquery with `limit 1` cannot be flattened into a hash join, so each key is one lookup in
 * the key's index whatever the table's statistics. The key must be unique (a primary key);
 * rows come back mapped as drizzle's `select()` maps them.
 */
export async function selectByKeys<T extends PgTable>(tx: { execute(query: SQL): PromiseLike<unknown> }, table: T, keyColumns: PgColumn[], keys: unknown[][]): Promise<T['$inferSelect'][]> {
  if (keys.length === 0) return [];
  const result = await tx.execute(keyLookup(table, keyColumns, keys));
  const cols = Object.entries(getTableColumns(table)) as [string, PgColumn][];
  return rowsOf<Record<string, unknown>>(result).map((raw) => {
    const row: Record<string, unknown> = {};
    for (const [key, c] of cols) {
      const v = raw[c.name];
      row[key] = v === null || v === undefined ? null : c.mapFromDriverValue(v);
    }
    return row as T['$inferSelect'];
  });
}

/**
 * Awaits statements issued together. On one connection (a transaction) they go out back to
 * back and their answers come back in one round trip, not one round trip each; Postgres still
 * runs them one after another, in the order issued. Rejects with the first failure, once every
 * statement has settled (none is left running behind the caller's back).
 */
export async function pipelined<T>(statements: readonly PromiseLike<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(statements);
  const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  // The statement that failed, rather than those refused after it ("transaction is aborted").
  const cause = failed.find((f) => (f.reason as { code?: unknown } | null)?.code !== IN_FAILED_TRANSACTION) ?? failed[0];
  if (cause) throw cause.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** SQLSTATE of a statement refused because an earlier one in its transaction failed. */
const IN_FAILED_TRANSACTION = '25P02';

/** Splits `items` into chunks of at most `size` (keeps statements under Postgres's parameter limit). */
export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * `select … from jsonb_to_recordset($1)`: many rows as ONE JSON parameter, parsed by
 * Postgres. Far cheaper per row than binding every value (the hot path of projections).
 * `columns` are the SQL column names with their types, in the order the select yields them.
 */
export function jsonRecordset(rows: object[], columns: [name: string, type: string][]): SQL {
  const defs = columns.map(([n, t]) => `"${n}" ${t}`).join(', ');
  const names = columns.map(([n]) => `"${n}"`).join(', ');
  return sql`select ${sql.raw(names)} from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as x(${sql.raw(defs)})`;
}

export function columnList(columns: [name: string, type: string][]): SQL {
  return sql.raw(columns.map(([n]) => `"${n}"`).join(', '));
}

/**
 * Inserts drizzle-shaped rows of `table` through jsonb_to_recordset; with `conflict`, an
 * upsert that overwrites every other column (`doNothing` to keep the existing row).
 */
export async function insertRows(
  tx: { execute(query: SQL): PromiseLike<unknown> },
  table: PgTable,
  rows: Record<string, unknown>[],
  conflict?: { target: string[]; doNothing?: boolean },
  chunkSize = 1000,
): Promise<void> {
  if (rows.length === 0) return;
  const cols = Object.entries(getTableColumns(table)) as [string, PgColumn][];
  const columns: [string, string][] = cols.map(([, c]) => [c.name, c.getSQLType()]);
  const name = getTableName(table);
  let onConflict = sql``;
  if (conflict) {
    const target = sql.raw(conflict.target.map((c) => `"${c}"`).join(', '));
    const updates = columns.filter(([n]) => !conflict.target.includes(n)).map(([n]) => `"${n}" = excluded."${n}"`);
    onConflict = conflict.doNothing || updates.length === 0 ? sql` on conflict (${target}) do nothing` : sql` on conflict (${target}) do update set ${sql.raw(updates.join(', '))}`;
  }
  const into = sql.raw(`"${name}"`);
  await pipelined(
    chunks(rows, chunkSize).map((part) => {
      const json = part.map((r) => {
        const o: Record<string, unknown> = {};
        for (const [key, c] of cols) o[c.name] = r[key] ?? null;
        return o;
      });
      return tx.execute(sql`insert into ${into} (${columnList(columns)}) ${jsonRecordset(json, columns)}${onConflict}`);
    }),
  );
}
