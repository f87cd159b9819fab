// Several peekd processes starting together on an empty database: one migrates, the others
// wait on the advisory lock and find the schema in place (without the lock, concurrent
// CREATE TABLEs fail with duplicate pg_type entries).
import { describe, expect, it } from 'vitest';
import { openDatabase, rowsOf, type Database } from '../../src/store/db.ts';
import { createTestDatabase } from '../helpers/services.ts';

describe('migrations', () => {
  it('are safe when six processes open a fresh database at the same moment', async () => {
    const db = await createTestDatabase();
    const opened: Database[] = [];
    try {
      const results = await Promise.allSettled(Array.from({ length: db.url ? 6 : 1 }, () => (db.url ? openDatabase({ url: db.url, maxConnections: 2 }) : db.open())));
      for (const r of results) if (r.status === 'fulfilled') opened.push(r.value);
      expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      const tables = rowsOf<{ n: number }>(
        await opened[0]!.db.execute(
          `select count(*)::int as n from information_schema.tables where table_name in ('syncapi_room_events', 'peek_audit', 'projection_checkpoints', 'accounts')` as never,
        ),
      );
      expect(Number(tables[0]?.n)).toBe(4);
    } finally {
      for (const d of opened) await d.close();
      await db.drop();
    }
  });
});
