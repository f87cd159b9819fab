import { getTableColumns, sql, type SQL } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';

/** `SET col = excluded.col` for every column of `table` but the listed ones (an upsert that overwrites). */
export function excludedAll(table: PgTable, except: string[] = []): Record<string, SQL> {
  const out: Record<string, SQL> = {};
  for (const [key, column] of Object.entries(getTableColumns(table))) {
    if (except.includes(key)) continue;
    out[key] = sql.raw(`excluded."${(column as PgColumn).name}"`);
  }
  return out;
}

/** `(a, b) IN ((…), (…))` for composite keys. */
export function tupleIn(columns: PgColumn[], keys: unknown[][]): SQL {
  const cols = sql.join(columns.map((c) => sql`${c}`), sql`, `);
  const tuples = sql.join(keys.map((k) => sql`(${sql.join(k.map((v) => sql`${v}`), sql`, `)})`), sql`, `);
  return sql`(${cols}) in (${tuples})`;
}

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
