// The embedded database (PGlite in the data directory, DATABASE_URL unset) serves one
// process at a time. A second process — `peekd audit` beside a serving peekd, a second
// `peekd serve` on the same directory — used to fail deep inside PGlite ("PGlite failed to
// initialize properly") or to write beside the first. It is now refused up front with a
// message that says what to do, and a lock left by a process that died is taken over.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config.ts';
import { openDatabase, rowsOf } from '../../src/store/db.ts';
import { tempDir } from '../helpers/services.ts';

describe('the embedded database', { timeout: 60_000 }, () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  /** A live process that is not this one: its PID in a lock file means "in use". */
  function otherProcess(): ChildProcess {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    return child;
  }

  async function exited(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise((resolve) => child.once('exit', resolve));
  }

  it('is refused to a second process with a message naming the holder and what to do, and taken over once the holder is gone', async () => {
    const dir = tempDir('peekd-pglite-lock-');
    cleanups.push(() => dir.remove());
    const lock = join(dir.path, 'pglite.lock');
    const holder = otherProcess();
    writeFileSync(lock, `${holder.pid}\n`);

    const refused = await openDatabase({ dataDir: dir.path }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    const message = (refused as Error).message;
    expect(message).toContain(`in use by process ${holder.pid}`);
    expect(message).toContain('DATABASE_URL');
    expect(message).toContain(lock);
    // Nothing of the holder's was touched.
    expect(readFileSync(lock, 'utf8').trim()).toBe(String(holder.pid));

    // The holder dies without removing its lock (SIGKILL): the next open takes over.
    holder.kill('SIGKILL');
    await exited(holder);
    const database = await openDatabase({ dataDir: dir.path });
    try {
      expect(readFileSync(lock, 'utf8').trim()).toBe(String(process.pid));
      expect(rowsOf<{ one: number }>(await database.db.execute(sql`select 1 as one`))[0]!.one).toBe(1);
    } finally {
      await database.close();
    }
    // Closing releases it.
    expect(existsSync(lock)).toBe(false);
  });

  it('is taken over from a PID that now runs something other than Node.js (a restart reused it)', async () => {
    const dir = tempDir('peekd-pglite-lock-');
    cleanups.push(() => dir.remove());
    const lock = join(dir.path, 'pglite.lock');
    const shell = spawn('sleep', ['60'], { stdio: 'ignore' });
    cleanups.push(() => shell.kill('SIGKILL'));
    writeFileSync(lock, `${shell.pid}\n`);
    const database = await openDatabase({ dataDir: dir.path });
    try {
      expect(readFileSync(lock, 'utf8').trim()).toBe(String(process.pid));
    } finally {
      await database.close();
    }
  });

  it('is released when opening fails, so the next open is not refused', async () => {
    const dir = tempDir('peekd-pglite-lock-');
    cleanups.push(() => dir.remove());
    // A database directory PGlite cannot start: the open fails after the lock was taken.
    mkdirSync(join(dir.path, 'pglite'));
    writeFileSync(join(dir.path, 'pglite', 'PG_VERSION'), 'not a version\n');
    await expect(openDatabase({ dataDir: dir.path })).rejects.toThrow();
    expect(existsSync(join(dir.path, 'pglite.lock'))).toBe(false);
  });
});
