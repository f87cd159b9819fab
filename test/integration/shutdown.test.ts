// Issue 13, points 3 and 4, against the real `peekd serve` process: the graceful shutdown
// on SIGTERM (an open long-poll answers at once, the phases run in their fixed order, the
// port is closed and the embedded nats-server stopped, exit 0), the deadline
// (PEEKD_SHUTDOWN_TIMEOUT_MS: exit 1 naming the step still running), `npm start` as the
// parent (a signal to npm reaches peekd; npm killed outright leaves no peekd behind), and
// the request log lines (one per request, its req_id carried into the command and append
// lines, no secret in the output).
//
// With DATABASE_URL each peekd gets a fresh database on that Postgres; without it each
// process opens an embedded PGlite database in its own data dir (processes cannot share
// one). NATS is the test services' server (a unique stream prefix per test), except where
// peekd starts its own.
import { spawnSync } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { Naming } from '../../src/events/subjects.ts';
import { connectNats } from '../../src/nats/connection.ts';
import { deleteStreams } from '../../src/nats/streams.ts';
import { enc, request, TestUser } from '../helpers/matrix.ts';
import { freePort } from '../helpers/natsCluster.ts';
import { cleanEnv, killAll, processesMentioning, startNpm, type NpmStart } from '../helpers/npmStart.ts';
import { parseLogLine, startPeekdProcess, type PeekdProcess } from '../helpers/peekdProcess.ts';
import { createTestDatabase, natsUrl, tempDir, uniqueName } from '../helpers/services.ts';
import { until } from '../helpers/until.ts';

const SHARDS = 8;
/** The info lines of a graceful shutdown of an all-in-one process, in order (no lease phase: nothing holds leases). */
const SHUTDOWN_SEQUENCE = ['shutting down', 'shutdown: http', 'shutdown: work', 'shutdown: mailboxes', 'shutdown: projections', 'shutdown: connections', 'shutdown complete'];

interface Deployment {
  port: number;
  url: string;
  /** Settings for a peekd on the shared NATS (its own stream prefix) and its own database. */
  env: Record<string, string>;
}

/** The parsed JSON log lines of `lines`. */
function logLines(lines: readonly string[]): Record<string, unknown>[] {
  return lines.map(parseLogLine).filter((l): l is Record<string, unknown> => l !== undefined);
}

/** The `msg` of every JSON log line, in order. */
function messages(lines: readonly string[]): string[] {
  return logLines(lines)
    .map((l) => l.msg)
    .filter((m): m is string => typeof m === 'string');
}

/** The shutdown lines among `lines`, in order. */
function shutdownSequence(lines: readonly string[]): string[] {
  return messages(lines).filter((m) => m === 'shutting down' || m === 'shutdown complete' || m.startsWith('shutdown: '));
}

/** How a new TCP connection to 127.0.0.1:`port` ends: 'connected' or the error code (ECONNREFUSED). */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = netConnect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('timeout');
    }, 2_000);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve('connected');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? err.message);
    });
  });
}

/** The value of an unlabelled sample in the Prometheus text format (undefined when absent). */
function sample(text: string, name: string): number | undefined {
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

/** `ps -eo pid,args` lines that mention `marker`. */
function psLinesMentioning(marker: string): string[] {
  const r = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.includes(marker));
}

describe.sequential('peekd serve shuts down gracefully', { timeout: 120_000 }, () => {
  let nc: NatsConnection;
  // Per test: undone in afterEach, last first.
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const procs: PeekdProcess[] = [];

  beforeAll(async () => {
    nc = await connectNats(natsUrl(), 'peekd-test-shutdown');
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill('SIGKILL');
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await nc?.drain();
  });

  /** A port, a database and a stream prefix of its own, removed after the test. */
  async function deployment(): Promise<Deployment> {
    const port = await freePort();
    const db = await createTestDatabase();
    const prefix = `${uniqueName()}_`;
    cleanups.push(async () => {
      await deleteStreams(nc, new Naming(prefix, SHARDS));
      await db.drop();
    });
    return {
      port,
      url: `http://127.0.0.1:${port}`,
      env: {
        NATS_URL: natsUrl(),
        // Empty (not inherited from this process): embedded PGlite in the data dir.
        DATABASE_URL: db.url ?? '',
        PEEKD_STREAM_PREFIX: prefix,
        PEEKD_SHARDS: String(SHARDS),
        PEEKD_LISTEN: `127.0.0.1:${port}`,
        PEEKD_SERVER_NAME: `${uniqueName('hs')}.test`,
        PEEKD_REGISTRATION_RATE_PER_SECOND: '1000',
      },
    };
  }

  async function start(env: Record<string, string>, name: string): Promise<PeekdProcess> {
    const p = await startPeekdProcess({ env, name });
    procs.push(p);
    return p;
  }

  it('on SIGTERM answers an open long-poll at once, runs the phases in order, exits 0 and closes the port', async () => {
    const d = await deployment();
    const proc = await start(d.env, 'sigterm');
    const alice = await TestUser.register(d.url, 'alice');
    const bob = await TestUser.register(d.url, 'bob');
    const { room_id } = await alice.createWorldReadableRoom();
    expect((await bob.peek(room_id)).status).toBe(200);
    const initial = await bob.sync();
    expect(typeof initial.next_batch).toBe('string');

    const longPoll = bob.req('GET', `/_matrix/client/v3/sync?since=${enc(initial.next_batch)}&timeout=30000`);
    let answered = false;
    void longPoll.then(
      () => (answered = true),
      () => (answered = true),
    );
    await until('the long-poll to wait (peekd_sync_waiters 1)', async () => {
      expect(answered, 'the long-poll answered before the signal').toBe(false);
      const r = await fetch(`${d.url}/metrics`);
      return sample(await r.text(), 'peekd_sync_waiters') === 1;
    });

    const signalledAt = Date.now();
    const exitCode = proc.kill('SIGTERM');
    const answer = await longPoll;
    const answerMs = Date.now() - signalledAt;
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(typeof answer.body.next_batch).toBe('string');
    expect(answerMs, 'the long-poll answered well before its 30 s timeout').toBeLessThan(5_000);

    expect(await exitCode, proc.lines.slice(-30).join('\n')).toBe(0);
    expect(shutdownSequence(proc.lines)).toEqual(SHUTDOWN_SEQUENCE);
    const shuttingDown = logLines(proc.lines).find((l) => l.msg === 'shutting down');
    expect(shuttingDown?.signal).toBe('SIGTERM');
    expect(messages(proc.lines)).not.toContain('shutdown step failed');
    expect(messages(proc.lines)).not.toContain('shutdown did not finish in time');
    expect(await tryConnect(d.port)).toBe('ECONNREFUSED');
  });

  it('stops the nats-server it started (NATS_URL unset) on SIGTERM', async () => {
    const d = await deployment();
    const proc = await start({ ...d.env, NATS_URL: '' }, 'embedded-nats');
    // The store dir (-sd) is under the data dir, ./data in the process's own temp dir.
    const storeDir = join(proc.dir, 'data', 'nats');
    cleanups.push(() => killAll(processesMentioning(storeDir)));
    const natsServers = processesMentioning(storeDir).filter((p) => p.args.includes(storeDir));
    expect(natsServers, 'one nats-server on the data dir').toHaveLength(1);
    expect(natsServers[0]!.args).toMatch(/nats-server/);
    const started = logLines(proc.lines).find((l) => l.msg === 'started embedded nats-server');
    expect(started?.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    const natsPort = Number(new URL(String(started!.url)).port);
    expect(await tryConnect(natsPort)).toBe('connected');

    expect(await proc.kill('SIGTERM'), proc.lines.slice(-30).join('\n')).toBe(0);
    expect(shutdownSequence(proc.lines)).toEqual(SHUTDOWN_SEQUENCE);
    expect(processesMentioning(storeDir), 'the embedded nats-server is gone').toEqual([]);
    expect(psLinesMentioning(storeDir)).toEqual([]);
    expect(await tryConnect(natsPort)).toBe('ECONNREFUSED');
    expect(await tryConnect(d.port)).toBe('ECONNREFUSED');
  });

  it('past PEEKD_SHUTDOWN_TIMEOUT_MS exits 1, naming the step still running', async () => {
    const d = await deployment();
    const proc = await start({ ...d.env, PEEKD_SHUTDOWN_TIMEOUT_MS: '1' }, 'deadline');
    const code = await proc.kill('SIGTERM');
    const out = proc.lines.join('\n');
    expect(code, out).toBe(1);
    expect(out).toContain('shutdown did not finish within 1 ms');
    expect(out).toMatch(/^peekd: shutdown did not finish within 1 ms \(PEEKD_SHUTDOWN_TIMEOUT_MS\); still running: (http|work|mailboxes|projections|leases|connections): \S/m);
    const err = logLines(proc.lines).find((l) => l.msg === 'shutdown did not finish in time');
    expect(err?.timeoutMs).toBe(1);
    expect(String(err?.running)).toMatch(/^(http|work|mailboxes|projections|leases|connections): \S/);
    expect(messages(proc.lines)).not.toContain('shutdown complete');
  });

  describe('npm start as the parent process', () => {
    /** `npm start` on a deployment, its data dir a new temp dir; resolves once GET /health answers 200. */
    async function npmStart(): Promise<{ npm: NpmStart; d: Deployment; dataDir: string; peekdPid: number }> {
      const d = await deployment();
      const dir = tempDir('peekd-npm-start-');
      cleanups.push(() => dir.remove());
      // Whatever is left carries the data dir in its environment: killed after the test.
      cleanups.push(() => killAll(processesMentioning(dir.path)));
      const npm = startNpm(cleanEnv({ ...d.env, PEEKD_DATA_DIR: dir.path }));
      cleanups.push(() => killAll([{ pid: npm.pid, args: 'npm start' }]));
      const tail = () => npm.lines.slice(-30).join('\n');
      await until(
        'GET /health to answer 200',
        async () => {
          if (npm.child.exitCode !== null || npm.child.signalCode !== null) throw new Error(`npm start exited (${npm.child.exitCode ?? npm.child.signalCode}):\n${tail()}`);
          try {
            const r = await fetch(`${d.url}/health`, { signal: AbortSignal.timeout(2_000) });
            await r.body?.cancel();
            return r.status === 200;
          } catch {
            return false;
          }
        },
        90_000, // a first run may build dist/ first
        100,
      );
      // npm (whose environment carries the data dir too) and the peekd it started.
      const others = processesMentioning(dir.path).filter((p) => p.pid !== npm.pid);
      expect(
        others.map((p) => p.args),
        tail(),
      ).toHaveLength(1);
      expect(others[0]!.args).toMatch(/bin\/peekd\.mjs serve$/);
      return { npm, d, dataDir: dir.path, peekdPid: others[0]!.pid };
    }

    it('SIGTERM to npm reaches peekd: npm exits 0 after a complete shutdown, nothing left behind', async () => {
      const { npm, d, dataDir } = await npmStart();
      process.kill(npm.pid, 'SIGTERM');
      const exit = await npm.exited;
      await npm.closed; // peekd held the same stdout and stderr
      const out = npm.lines.join('\n');
      expect(exit, out).toEqual({ code: 0, signal: null });
      expect(shutdownSequence(npm.lines)).toEqual(SHUTDOWN_SEQUENCE);
      expect(logLines(npm.lines).find((l) => l.msg === 'shutting down')?.signal).toBe('SIGTERM');
      expect(await tryConnect(d.port)).toBe('ECONNREFUSED');
      expect(processesMentioning(dataDir)).toEqual([]);
      expect(psLinesMentioning(dataDir)).toEqual([]);
    });

    it('npm SIGKILLed: peekd notices its parent is gone and shuts down by itself', async () => {
      const { npm, d, dataDir } = await npmStart();
      process.kill(npm.pid, 'SIGKILL');
      expect(await npm.exited).toEqual({ code: null, signal: 'SIGKILL' });
      // The parent-exit watch looks once a second.
      await until('peekd to exit by itself', () => processesMentioning(dataDir).length === 0, 10_000, 50);
      await Promise.race([npm.closed, new Promise((r) => setTimeout(r, 2_000))]);
      const out = npm.lines.join('\n');
      expect(messages(npm.lines), out).toContain('shutdown complete');
      expect(shutdownSequence(npm.lines)).toEqual(SHUTDOWN_SEQUENCE);
      expect(logLines(npm.lines).find((l) => l.msg === 'shutting down')?.signal).toBe('parent exited');
      expect(await tryConnect(d.port)).toBe('ECONNREFUSED');
      expect(psLinesMentioning(dataDir)).toEqual([]);
    });
  });

  it('logs one request line per request, its req_id on the command and append lines, and no secret', async () => {
    const d = await deployment();
    const proc = await start({ ...d.env, PEEKD_LOG_LEVEL: 'debug' }, 'request-logs');
    const password = `pw-${uniqueName()}`;
    const alice = await TestUser.register(d.url, 'alice', password);
    const bob = await TestUser.register(d.url, 'bob', password);
    const { room_id } = await alice.createWorldReadableRoom();

    // The token in the query string.
    const whoami = await request(d.url, 'GET', `/_matrix/client/v3/account/whoami?access_token=${enc(bob.token)}`);
    expect(whoami.status).toBe(200);
    expect(whoami.body.user_id).toBe(bob.userId);
    const whoamiId = whoami.headers.get('x-request-id');
    expect(whoamiId).toBeTruthy();

    // The token in the Authorization header.
    const peek = await bob.peek(room_id);
    expect(peek.status).toBe(200);
    const reqId = peek.headers.get('x-request-id')!;
    expect(reqId).toMatch(/^[0-9a-f-]{36}$/);

    // The request line is written once the response went out: wait for it.
    const requestLines = (id: string) => logLines(proc.lines).filter((l) => l.msg === 'request' && l.req_id === id);
    await until('the request lines of whoami and the peek', () => requestLines(reqId).length > 0 && requestLines(whoamiId!).length > 0);
    const line = requestLines(reqId);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ req_id: reqId, method: 'POST', route: '/_matrix/client/v3/peek/:roomIdOrAlias', status: 200 });
    expect(typeof line[0]!.ms).toBe('number');
    expect(Number.isFinite(line[0]!.ms)).toBe(true);
    expect(requestLines(whoamiId!)).toHaveLength(1);
    expect(requestLines(whoamiId!)[0]).toMatchObject({ method: 'GET', route: '/_matrix/client/v3/account/whoami', status: 200 });

    // The peek's command (its ID is the request ID) ran and appended.
    const withId = logLines(proc.lines).filter((l) => l.req_id === reqId);
    expect(withId.filter((l) => l.msg === 'command ran').length).toBeGreaterThanOrEqual(1);
    expect(withId.filter((l) => l.msg === 'appended').length).toBeGreaterThanOrEqual(1);
    expect(withId.find((l) => l.msg === 'command ran')).toMatchObject({ command: 'StartDevicePeek', room: room_id });

    expect(await proc.kill('SIGTERM')).toBe(0);
    const out = proc.lines.join('\n');
    for (const secret of [alice.token, bob.token, password, enc(bob.token)]) {
      expect(out.includes(secret), `the output holds a secret (${secret.slice(0, 4)}…)`).toBe(false);
    }
  });
});
