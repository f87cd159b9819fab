// `npm run bench` is how an operator measures peekd on their machine (docs/performance.md).
// It drives peekd from outside: a peekd process built from dist/, a load generator, and,
// for the closing notes, a CPU profile and a trace that wraps peekd's live NATS and
// Postgres clients. A change inside peekd can break that without any other test noticing
// (the prepared-statements wrapper once made the tracer recurse until the stack ran out,
// and every scenario failed). This runs the smallest whole scenario — the hot room, scaled
// down, profiled whatever its result — against the test services, as a user would.
import { execFileSync, spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cleanEnv, REPO_ROOT } from '../helpers/npmStart.ts';
import { databaseUrl, natsUrl } from '../helpers/services.ts';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBench(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/bench.mjs', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const num = (s: string): number => Number(s.replace(/,/g, ''));

describe('npm run bench', () => {
  it('runs the hot-room scenario end to end: a ratio against its own ceiling, a clean verify, a profile and a trace of peekd', async () => {
    const env = cleanEnv({ NATS_URL: natsUrl(), ...(databaseUrl() ? { DATABASE_URL: databaseUrl() } : {}) });
    const run = await runBench(['hot-room', '--quick', '--profile'], env);
    expect(run.code, `bench failed:\n${run.stderr.slice(-4000)}`).toBe(0);
    expect(run.stderr).not.toMatch(/FAILED/);

    const row = /^\| hot-room \| sequential peek\/renew\/unpeek on one room, commands\/s \(HTTP\) \| ([\d,.]+) \| ([\d,.]+) raw expected-seq publishes\/s \| ([\d.]+) \|/m.exec(run.stdout);
    expect(row, run.stdout).not.toBeNull();
    const [peekd, raw, ratio] = [num(row![1]!), num(row![2]!), Number(row![3])];
    expect(peekd).toBeGreaterThan(0);
    expect(raw).toBeGreaterThan(0);
    expect(ratio).toBeCloseTo(peekd / raw, 1);

    // Every read model equal to a rebuild from the log after the load.
    expect(run.stdout).toContain('hot-room: peekd verify after the load: clean');
    // The profiler ran in peekd's process, and the tracer saw its commands and its statements.
    expect(run.stdout).toMatch(/hot-room \(peekd process\) — CPU profile of \d+ ms/);
    const trace = /wall-clock trace over ([\d,]+) commands/.exec(run.stdout);
    expect(trace, run.stdout).not.toBeNull();
    expect(num(trace![1]!)).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/command bus: StartDevicePeek \(actor mailbox \+ handle\)/);
    expect(run.stdout).toMatch(/pg(?: \(tx\))?: /);
    // The HTTP floor beside peekd's CPU per command.
    const floor = /hot-room: the HTTP floor .*: a bare node:http server ([\d,]+)\/s at ([\d,.]+) µs .* Fastify .* ([\d,]+)\/s at ([\d,.]+) µs; peekd ([\d,.]+) µs per command/.exec(run.stdout);
    expect(floor, run.stdout).not.toBeNull();
    for (const v of floor!.slice(1)) expect(num(v!)).toBeGreaterThan(0);
    // The append floor: the bare server appending every request, every append acknowledged.
    const append = /hot-room: the append floor .*: ([\d,]+)\/s at ([\d,.]+) µs of CPU per request(.*?), ([\d.]+) of the raw ceiling/.exec(run.stdout);
    expect(append, run.stdout).not.toBeNull();
    expect(append![3]).toBe('');
    for (const v of [append![1], append![2], append![4]]) expect(num(v!)).toBeGreaterThan(0);
    // Where peekd's main thread spent the run (the kernel's schedstat): the three parts add up to the run.
    const thread = /hot-room: peekd's main thread .*: on a core ([\d.]+) of the time, runnable but waiting in the run queue for a core ([\d.]+), idle \(waiting for I\/O or a timer\) ([\d.]+)/.exec(
      run.stdout,
    );
    expect(thread, run.stdout).not.toBeNull();
    const [onCpu, waiting, idle] = thread!.slice(1).map(Number) as [number, number, number];
    expect(onCpu).toBeGreaterThan(0);
    expect(onCpu + waiting + idle).toBeCloseTo(1, 1);
  }, 300_000);

  it('--against=REF: this checkout and another commit under the same load at once, a row per shape and measure, nothing left behind', async () => {
    const env = cleanEnv({ NATS_URL: natsUrl(), ...(databaseUrl() ? { DATABASE_URL: databaseUrl() } : {}) });
    const worktrees = () => execFileSync('git', ['worktree', 'list'], { cwd: REPO_ROOT, encoding: 'utf8' });
    const before = worktrees();
    const run = await runBench(['--against=HEAD', '--quick'], env);
    expect(run.code, `bench failed:\n${run.stderr.slice(-4000)}`).toBe(0);
    const sha = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    expect(run.stdout).toContain(`| scenario | what is measured | this checkout | ${sha} |`);
    for (const shape of ['many-rooms', 'hot-room']) {
      const rows = [...run.stdout.matchAll(new RegExp(`^\\| compare ${shape} \\| [^|]+ \\| ([\\d,.]+) \\| ([\\d,.]+) \\| ([\\d.]+) \\|`, 'gm'))];
      expect(rows, run.stdout).toHaveLength(2); // commands/s, CPU per command
      for (const r of rows) for (const v of r.slice(1, 4)) expect(num(v!)).toBeGreaterThan(0);
    }
    expect(run.stdout).not.toMatch(/non-2xx/);
    // The other commit was built in a temporary worktree, removed afterwards.
    expect(worktrees()).toBe(before);

    // A ref that names no commit: said so, before anything starts.
    const bad = await runBench(['--against=no-such-ref-anywhere', '--quick'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--against=no-such-ref-anywhere: not a commit of this repository');
  }, 300_000);
});
