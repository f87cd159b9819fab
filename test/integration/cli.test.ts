// The operator CLI as operators run it: `node bin/peekd.mjs verify|replay|audit` in a child
// process (stdout and stderr are pipes, not a terminal), pointed by env at a test
// deployment that a peekd in this process keeps serving. Exit codes, the rows a failed
// verify names, plain progress lines, and the jsonl and table outputs of audit.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomCommand } from '../../src/actors/commands.ts';
import { seqOfPosition, throughSeq } from '../../src/events/envelope.ts';
import type { PeekEvent } from '../../src/events/peekEvents.ts';
import { formatAuditTable } from '../../src/operator/commands.ts';
import { progressReporter } from '../../src/operator/progress.ts';
import type { AuditEntry } from '../../src/projections/auditQuery.ts';
import { readModels } from '../../src/projections/index.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { appendHistories, auditEntryOf, createRoomCommand, HOUR, ManualClock, referencePeekTables, roomHistory, T0, type Placed } from '../helpers/peekLog.ts';
import { natsUrl } from '../helpers/services.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
type Known = Placed & { event: PeekEvent };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

// eslint-disable-next-line no-control-regex -- the escape that starts a colour code
const ANSI = /\u001b\[/;

// Each test starts peekd processes (node + tsx, a few seconds each on a busy machine).
describe('peekd CLI in a child process', { timeout: 120_000 }, () => {
  let t: Awaited<ReturnType<typeof startTestPeekd>>;
  let first: Awaited<ReturnType<typeof startTestPeekd>>;
  const clock = new ManualClock(T0 - 24 * HOUR);

  /**
   * With Postgres the CLI runs beside the serving peekd. With the embedded PGlite database
   * (no DATABASE_URL: the tests' fallback) one process at a time may open it, so — as the
   * README tells operators — peekd is stopped while the CLI runs, and started again after.
   */
  async function withCli<T>(fn: () => Promise<T>): Promise<T> {
    if (t.databaseUrl) return fn();
    await t.close();
    try {
      return await fn();
    } finally {
      t = await startTestPeekd({ clock, env: { PEEKD_ROLES: 'http,rooms,projections' }, serverName: first.serverName, reuse: { prefix: first.prefix, dataDir: first.dataDir } });
    }
  }
  const events: Known[] = [];
  const ROOM = '!cli.room:example.org';

  /** Runs `node bin/peekd.mjs …args` with the test deployment's settings in its env. */
  function peekd(...args: string[]): Promise<Run> {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(VITEST|NODE_OPTIONS|PEEKD_|DATABASE_URL|NATS_URL)/.test(k)) env[k] = v;
    if (t.databaseUrl) env.DATABASE_URL = t.databaseUrl;
    Object.assign(env, {
      NATS_URL: natsUrl(),
      PEEKD_STREAM_PREFIX: t.prefix,
      PEEKD_SHARDS: '8',
      PEEKD_DATA_DIR: t.dataDir,
      PEEKD_SERVER_NAME: t.serverName,
    });
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['bin/peekd.mjs', ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /**
   * Runs the commands: at once with Postgres; one after another with PGlite, which one
   * process at a time may open (a second is refused: the lock test below).
   */
  async function each<T extends string[][]>(commands: [...T]): Promise<{ [K in keyof T]: Run }> {
    let runs: Run[];
    if (t.databaseUrl) runs = await Promise.all(commands.map((c) => peekd(...c)));
    else {
      runs = [];
      for (const c of commands) runs.push(await peekd(...c));
    }
    return runs as { [K in keyof T]: Run };
  }

  beforeAll(async () => {
    t = first = await startTestPeekd({ clock, env: { PEEKD_ROLES: 'http,rooms,projections' } });
    const histories = new Map<string, object[]>();
    histories.set(ROOM, roomHistory(ROOM, 120, 11));
    for (let i = 0; i < 8; i++) histories.set(`!cli${i}:example.org`, roomHistory(`!cli${i}:example.org`, 150, 20 + i));
    const placed = await appendHistories(t.peekd.log, t.peekd.naming, histories);
    events.push(...placed.filter((p): p is Known => p.event !== null));
    // A real room, so that sync_rooms has rows to verify, and a peek the actor wrote.
    const roomId = `!hosted:${t.serverName}`;
    const send = async (command: RoomCommand) => {
      const r = await t.peekd.bus.send(command);
      for (const e of r.peekEvents) events.push({ seq: e.seq, roomId, shard: t.peekd.naming.shardOf(roomId), event: e.event });
      return r;
    };
    const created = await send(createRoomCommand(roomId, `@owner:${t.serverName}`));
    await send({ type: 'StartDevicePeek', roomId, userId: `@zed:${t.serverName}`, deviceId: 'TABLET' });
    events.sort((a, b) => a.seq - b.seq);
    await t.peekd.waitForProjections('peeks', events.at(-1)!.seq);
    await t.peekd.waitForProjections('rooms', created.roomEvents.at(-1)!.seq);
  });

  afterAll(async () => {
    if (t !== first) await t?.close();
    await first?.dropAll();
  });

  it('verify exits 0 on untouched tables, with plain progress lines on a pipe', async () => {
    const r = await withCli(() => peekd('verify'));
    expect(r.code, r.stderr).toBe(0);
    const last = throughSeq(seqOfPosition(events.at(-1)!.seq)); // the checkpoint covers the whole last envelope
    for (const p of readModels('all')) expect(r.stdout).toMatch(new RegExp(`^${p.name} at sequence \\d+: OK$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^audit at sequence ${last}: OK$`, 'm'));
    expect(r.stdout).toMatch(/^ {2}peek_audit: live \d+ rows [0-9a-f]{32}, rebuilt \d+ rows [0-9a-f]{32}$/m);
    expect(r.stdout).not.toContain('differs');
    // Not a terminal: one plain line per report, no bar, no escape codes.
    expect(r.stderr).toMatch(new RegExp(`^verify audit: ${last}/${last} events, \\d+ ev/s, ETA 0 s$`, 'm'));
    expect(r.stderr).toMatch(/^verify sync_rooms: \d+\/\d+ events, \d+ ev\/s, ETA \d+ s$/m);
    expect(r.stderr).not.toMatch(ANSI);
    expect(r.stdout).not.toMatch(ANSI);
  });

  it('verify exits 1 after a row was changed by hand, naming it; replay repairs it while peekd serves', async () => {
    const db = t.peekd.database.db;
    const row = referencePeekTables(events).syncapi_peeks.find((p) => p.roomId === ROOM && p.endedSeq === null)!;
    await db.execute(sql`update syncapi_peeks set end_reason = 'edited_by_hand' where room_id = ${row.roomId} and user_id = ${row.userId} and device_id = ${row.deviceId}`);

    const [bad, replay, good] = await withCli(async () => {
      const b = await peekd('verify', '--projection', 'sync_peeks');
      const r = await peekd('replay', '--projection', 'sync_peeks');
      return [b, r, await peekd('verify', '--projection', 'sync_peeks')];
    });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/^sync_peeks at sequence \d+: DIFFERENT$/m);
    expect(bad.stdout).toMatch(/^ {2}syncapi_peeks: live (\d+) rows [0-9a-f]{32}, rebuilt \1 rows [0-9a-f]{32} {2}<-- differs$/m);
    const named = bad.stdout.split('\n').filter((l) => l.startsWith('    '));
    expect(named).toHaveLength(2);
    expect(named[0]).toMatch(/^ {4}- live {4}\(/);
    expect(named[0]).toContain('edited_by_hand');
    expect(named[1]).toMatch(/^ {4}\+ rebuilt \(/);
    expect(named[1]).not.toContain('edited_by_hand');
    for (const l of named) expect(l).toContain(`${row.roomId},${row.userId},${row.deviceId}`);
    // Only the projection asked for.
    expect(bad.stdout).not.toContain('audit at sequence');

    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(/^replayed sync_peeks up to sequence \d+ in \d+\.\d s; swapped in$/m);
    expect(replay.stderr).toMatch(/^replay sync_peeks: (\d+)\/\1 events, \d+ ev\/s, ETA 0 s$/m);
    expect(replay.stderr).not.toMatch(ANSI);

    expect(good.code, good.stdout).toBe(0);
    expect(good.stdout).toMatch(/^sync_peeks at sequence \d+: OK$/m);
  });

  it('audit prints jsonl and tables for every kind of filter', async () => {
    const want = (pred: (e: Known) => boolean) => events.filter(pred).map(auditEntryOf);
    const jsonl = (r: Run) =>
      r.stdout
        .trimEnd()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as AuditEntry);
    const times = events.filter((e) => e.roomId === '!cli3:example.org').map((e) => e.event.at);
    const [since, until] = [times[20]!, times[90]!];
    const isDevice = (e: Known, user: string, device?: string) => e.event.peek.kind === 'device' && e.event.peek.userId === user && (device === undefined || e.event.peek.deviceId === device);
    const isServer = (e: Known, server: string) => e.event.peek.kind !== 'device' && e.event.peek.server === server;
    const [room, user, device, server, table, empty] = await withCli(() =>
      each([
        ['audit', '--room', ROOM, '--format', 'jsonl'],
        ['audit', '--user', '@ann:example.org', '--format', 'jsonl'],
        ['audit', '--user', '@bo:example.org', '--device', 'PHONE', '--since', String(since), '--until', new Date(until).toISOString(), '--format', 'jsonl'],
        ['audit', '--server', 'peer.example', '--since', String(since), '--until', String(until), '--format', 'jsonl'],
        ['audit', '--room', `!hosted:${t.serverName}`],
        ['audit', '--server', 'nobody.example', '--format', 'jsonl'],
      ]),
    );
    for (const r of [room, user, device, server, table, empty]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
    }
    expect(jsonl(room)).toEqual(want((e) => e.roomId === ROOM));
    expect(jsonl(user)).toEqual(want((e) => isDevice(e, '@ann:example.org')));
    expect(jsonl(device)).toEqual(want((e) => isDevice(e, '@bo:example.org', 'PHONE') && e.event.at >= since && e.event.at <= until));
    expect(jsonl(server)).toEqual(want((e) => isServer(e, 'peer.example') && e.event.at >= since && e.event.at <= until));
    for (const r of [room, user, device, server]) expect(jsonl(r).length).toBeGreaterThan(3);
    expect(empty.stdout).toBe('');

    // The default format: a table with a header, one row per event.
    const hosted = want((e) => e.roomId === `!hosted:${t.serverName}`);
    expect(hosted).toHaveLength(1);
    expect(table.stdout).toBe(`${formatAuditTable(hosted)}\n`);
    expect(table.stdout).toMatch(/^seq\s+time\s+room\s+event\s+kind\s+who\s+reason\s+expires\n\d+\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+!hosted:\S+\s+PeekStarted\s+device\s+@zed:\S+ TABLET\s+\d{4}-/);
  });

  it('refuses bad arguments with one line and exit code 1', async () => {
    const runs = await Promise.all([
      peekd('audit', '--format', 'jsonl'),
      peekd('audit', '--room', ROOM, '--format', 'xml'),
      peekd('audit', '--device', 'PHONE', '--room', ROOM),
      peekd('audit', '--room', ROOM, '--since', 'last tuesday'),
      peekd('verify', '--projection', 'nope'),
      peekd('replay', '--projection', 'federation_outbox'),
    ]);
    const messages = [
      'peekd: give room_id, user_id or server_name',
      'peekd: --format must be table or jsonl',
      'peekd: device_id needs user_id',
      'peekd: since must be ms since the epoch or an ISO 8601 time',
      'peekd: unknown projection nope; one of: sync_rooms, sync_peeks, federation_peeks, audit, all',
      'peekd: unknown projection federation_outbox; one of: sync_rooms, sync_peeks, federation_peeks, audit, all',
    ];
    for (const [i, r] of runs.entries()) {
      expect(r.code, messages[i]).toBe(1);
      expect(r.stderr.trim()).toBe(messages[i]);
      expect(r.stdout).toBe('');
    }
  });

  it('refuses split roles without a shared NATS and Postgres, before starting anything', async () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(VITEST|NODE_OPTIONS|PEEKD_|DATABASE_URL|NATS_URL)/.test(k)) env[k] = v;
    Object.assign(env, { PEEKD_ROLES: 'rooms', NATS_URL: natsUrl(), PEEKD_DATA_DIR: t.dataDir });
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['bin/peekd.mjs', 'serve'], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('peekd: PEEKD_ROLES splits the roles across processes: they must share one NATS (NATS_URL) and one Postgres (DATABASE_URL)');
  });
});

describe('progress reports', () => {
  /** A stream that records what is written, a terminal or not. */
  function fakeStream(isTTY: boolean) {
    let text = '';
    const stream = {
      isTTY,
      columns: 120,
      write(chunk: string) {
        text += chunk;
        return true;
      },
      cursorTo: () => true,
      clearLine: () => true,
      moveCursor: () => true,
      on: () => stream,
      removeListener: () => stream,
    };
    return { stream: stream as unknown as NodeJS.WriteStream, text: () => text };
  }

  it('writes plain lines, at most one per 2 s plus the last, when not on a terminal', () => {
    const out = fakeStream(false);
    const p = progressReporter('replay audit', out.stream);
    for (let done = 1000; done <= 50_000; done += 1000) p.update(done, 60_000);
    p.stop();
    const lines = out.text().trimEnd().split('\n');
    // The first update, and the last one at stop (the rest fell within 2 s).
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^replay audit: 1000\/60000 events, \d+ ev\/s, ETA \d+ s$/);
    expect(lines[1]).toMatch(/^replay audit: 50000\/60000 events, \d+ ev\/s, ETA \d+ s$/);
    // Reaching the total always prints.
    p.update(60_000, 60_000);
    expect(out.text().trimEnd().split('\n').at(-1)).toMatch(/^replay audit: 60000\/60000 events, \d+ ev\/s, ETA 0 s$/);
  });

  it('draws a bar with events/s and an ETA on a terminal', () => {
    const out = fakeStream(true);
    const p = progressReporter('replay audit', out.stream);
    p.update(30_000, 60_000);
    p.update(60_000, 60_000);
    p.stop();
    const text = out.text();
    expect(text).toContain('replay audit [');
    expect(text).toMatch(/\| 60000\/60000 events \| \d+ ev\/s \| ETA /);
    expect(text).toContain('100%');
  });
});
