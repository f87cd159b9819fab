// `npm start` with nothing configured: embedded PGlite under ./data, its own nats-server.
// Runs the real entry point in a child process from an empty directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TestUser, request } from '../helpers/matrix.ts';
import { tempDir } from '../helpers/services.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/peekd.mjs');

/** The environment of a fresh shell: no peekd, Postgres or NATS settings at all. */
function bareEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('PEEKD_') || k === 'DATABASE_URL' || k === 'NATS_URL' || k.startsWith('VITEST') || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function collect(child: ChildProcess): { out: () => string } {
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  return { out: () => out };
}

async function waitForVersions(base: string, child: ChildProcess, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`peekd exited with ${child.exitCode}`);
    try {
      const r = await request(base, 'GET', '/_matrix/client/versions');
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('peekd did not answer /versions in time');
}

describe('npm start with no configuration', () => {
  const dir = tempDir('peekd-embedded-');
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    dir.remove();
  });

  it('comes up on the defaults, takes a command, and its projection shows it', async () => {
    child = spawn(process.execPath, [BIN, 'serve'], { cwd: dir.path, env: bareEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const log = collect(child);
    const base = 'http://127.0.0.1:8008';
    try {
      await waitForVersions(base, child, 90_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${log.out()}`, { cause: err });
    }
    expect(existsSync(join(dir.path, 'data', 'pglite'))).toBe(true);
    expect(existsSync(join(dir.path, 'data', 'nats'))).toBe(true);
    expect(existsSync(join(dir.path, 'data', 'signing.key'))).toBe(true);

    const alice = await TestUser.register(base, 'alice');
    expect(alice.userId).toBe('@alice:localhost:8008');
    const bob = await TestUser.register(base, 'bob');
    const { room_id } = await alice.createWorldReadableRoom();
    await alice.send(room_id, 'hello embedded');
    const peek = await bob.peek(room_id);
    expect(peek.status).toBe(200);
    const sync = await bob.sync();
    const timeline = sync.rooms.peek[room_id].timeline.events;
    // Like a new join: the whole history fits, from m.room.create on, and no state section.
    expect(timeline[0].type).toBe('m.room.create');
    expect(sync.rooms.peek[room_id].state.events).toEqual([]);
    expect(timeline.at(-1).content.body).toBe('hello embedded');

    // The key never reaches the log.
    const { readFileSync } = await import('node:fs');
    const seed = readFileSync(join(dir.path, 'data', 'signing.key'), 'utf8')
      .trim()
      .split(' ')[2]!;
    expect(log.out()).not.toContain(seed);
    expect(log.out()).not.toContain(alice.token);

    // SIGTERM: a clean exit that also stops the nats-server it started.
    const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const { spawnSync } = await import('node:child_process');
    const left = spawnSync('pgrep', ['-f', join(dir.path, 'data', 'nats')], { encoding: 'utf8' });
    expect(left.stdout.trim()).toBe(''); // the embedded nats-server is gone too
  }, 150_000);

  it('says in one line how to get nats-server when it cannot find it, and that PEEKD_NATS_SERVER points elsewhere', async () => {
    const c = spawn(process.execPath, [BIN, 'serve'], {
      cwd: dir.path,
      env: bareEnv({ PEEKD_NATS_SERVER: '/nonexistent/nats-server', PEEKD_LISTEN: '127.0.0.1:0' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = collect(c);
    const code = await new Promise<number | null>((r) => c.once('exit', (x) => r(x)));
    expect(code).toBe(1);
    const lines = log.out().trim().split('\n');
    expect(lines.at(-1)).toMatch(/^peekd: PEEKD_NATS_SERVER is "\/nonexistent\/nats-server", which is not an executable file: point it at nats-server.*apt-get install nats-server.*NATS_URL/);
  }, 60_000);
});
