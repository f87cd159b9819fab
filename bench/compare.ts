// `npm run bench -- --against=<git ref>`: the command load on this checkout's peekd and on
// another commit's, at the same time. On a shared machine the speed of the same code drifts
// by ±10–50 % from one minute to the next (and by ±10 % between two 3-second stretches), so
// two bench runs minutes apart cannot show a change of a few per cent. Here both peekds run
// at once, each on its own database and streams, and the load generator drives both in the
// same rounds with the same load: whatever the machine does meanwhile falls on both alike.
// Each round gives each side's commands/s and peekd's CPU per command (from /proc); the
// table gives the medians, the median of the per-round ratios and their range.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peekCycle } from './commands.ts';
import { cpuSample, cpuSecondsOf, fmtNum, log, RESULTS_DIR, ROOT, round, startLoadChild, startPeekdChild, type PeekdHandle, type Row, type ScenarioResult } from './harness.ts';
import type { BenchContext } from './scenario.ts';

/** peekd's compiled dist/ at `ref`, built once into bench/results/compare/<sha>/ (ignored by git). */
export function buildRef(ref: string): { sha: string; dist: string } {
  const found = spawnSync('git', ['rev-parse', '--verify', '--quiet', `${ref}^{commit}`], { cwd: ROOT, encoding: 'utf8' });
  if (found.status !== 0) throw new Error(`--against=${ref}: not a commit of this repository (git rev-parse found none)`);
  const sha = found.stdout.trim();
  const out = join(RESULTS_DIR, 'compare', sha.slice(0, 12));
  const dist = join(out, 'dist');
  if (existsSync(join(dist, '.built'))) return { sha, dist };
  const tree = mkdtempSync(join(tmpdir(), 'peekd-compare-'));
  log(`compare: building ${ref} (${sha.slice(0, 12)}) in ${tree}`);
  try {
    execFileSync('git', ['worktree', 'add', '--detach', tree, sha], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    // REF is built and run with this checkout's node_modules: a change of dependencies is not compared.
    symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const res = spawnSync(process.execPath, [tsc, '-p', join(tree, 'tsconfig.build.json')], { cwd: tree, stdio: ['ignore', 2, 2] });
    if (res.status !== 0) throw new Error(`compare: building ${ref} failed (tsc exited ${res.status ?? res.signal})`);
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    cpSync(join(tree, 'dist'), dist, { recursive: true });
    // What dist/ reads beside it at run time: the migrations and the admin page's files.
    for (const dir of ['drizzle', 'static']) if (existsSync(join(tree, dir))) cpSync(join(tree, dir), join(out, dir), { recursive: true });
    writeFileSync(join(dist, '.built'), `${sha}\n`);
  } finally {
    // Never leave the temporary worktree registered (nor let its removal hide a build error).
    rmSync(tree, { recursive: true, force: true });
    spawnSync('git', ['worktree', 'prune'], { cwd: ROOT, stdio: 'ignore' });
  }
  return { sha, dist };
}

interface Shape {
  name: string;
  rooms: number;
  connections: number;
}

interface Turn {
  perSecond: number;
  /** peekd's CPU (user + system, all threads) per command, µs. */
  cpuUs: number;
  non2xx: number;
}

interface Side {
  label: string;
  peekd: PeekdHandle;
  rooms: string[];
  tokens: string[];
  turns: Turn[];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function runCompare(ctx: BenchContext, ref: string, built: { sha: string; dist: string }): Promise<ScenarioResult> {
  const { sha, dist } = built;
  const short = sha.slice(0, 12);
  const shapes: Shape[] = [
    { name: 'many-rooms', rooms: ctx.quick ? 1000 : 10_000, connections: 64 },
    { name: 'hot-room', rooms: 1, connections: 1 },
  ];
  const rounds = ctx.quick ? 2 : 10;
  const turnS = ctx.quick ? 2 : 3;
  const rows: Row[] = [];
  const notes: string[] = [];
  const details: Record<string, unknown> = { ref, sha, rounds, turnS };
  const load = await startLoadChild(ctx.services, 'compare');
  try {
    for (const shape of shapes) {
      const sides: Side[] = [];
      try {
        for (const [label, env] of [
          ['this checkout', {}],
          [short, { BENCH_PEEKD_DIST: dist }],
        ] as const) {
          const peekd = await startPeekdChild(ctx.services, { label: `compare-${shape.name}-${sides.length}`, env });
          const side: Side = { label, peekd, rooms: [], tokens: [], turns: [] };
          sides.push(side);
          log(`compare ${shape.name}: ${label}: creating ${shape.rooms} rooms`);
          side.rooms = await peekd.child.call<string[]>('createRooms', { count: shape.rooms, creator: `@bench:${peekd.serverName}`, concurrency: 128 }, 900_000);
          const users = await load.call<{ token: string }[]>('register', { url: peekd.url, count: shape.connections, prefix: 'c' });
          side.tokens = users.map((u) => u.token);
        }
        // Both sides under the same load at the same moment: what the machine does meanwhile
        // (other tenants, frequency changes) falls on both alike.
        const together = async (seconds: number): Promise<Turn[]> => {
          const before = cpuSample();
          const runs = await Promise.all(sides.map((side) => peekCycle(load, { url: side.peekd.url, rooms: side.rooms, tokens: side.tokens, connections: shape.connections, durationS: seconds })));
          // After each side's projections have caught up: their work for the round counts too.
          await Promise.all(sides.map((side) => side.peekd.child.call('settle')));
          const after = cpuSample();
          return sides.map((side, i) => {
            const run = runs[i]!;
            const cpuUs = run.ok > 0 ? (cpuSecondsOf(before, after, side.peekd.child.pid) * 1e6) / run.ok : Infinity;
            return { perSecond: run.perSecond, cpuUs, non2xx: run.non2xx };
          });
        };
        log(`compare ${shape.name}: warm-up`);
        await together(2);
        for (let r = 0; r < rounds; r++) {
          const turns = await together(turnS);
          sides.forEach((side, i) => side.turns.push(turns[i]!));
          log(`compare ${shape.name}: round ${r + 1}/${rounds}: ${sides.map((s) => `${s.label} ${fmtNum(s.turns.at(-1)!.perSecond)}/s, ${fmtNum(s.turns.at(-1)!.cpuUs)} µs`).join('; ')}`);
        }
      } finally {
        for (const side of sides) await side.peekd.stop();
      }
      const [a, b] = sides as [Side, Side];
      const perRound = a.turns.map((t, i) => t.perSecond / b.turns[i]!.perSecond);
      const cpuRound = a.turns.map((t, i) => t.cpuUs / b.turns[i]!.cpuUs);
      const bad = sides.flatMap((s) => s.turns).reduce((n, t) => n + t.non2xx, 0);
      if (bad > 0) notes.push(`compare ${shape.name}: ${bad} non-2xx answers: the numbers do not compare like with like.`);
      const metric = shape.rooms === 1 ? 'sequential peek/renew/unpeek on one room' : `peek/renew/unpeek across ${fmtNum(shape.rooms)} rooms, ${shape.connections} conns`;
      rows.push(
        {
          scenario: `compare ${shape.name}`,
          metric: `${metric}: commands/s, median of ${rounds} rounds of ${turnS} s`,
          value: fmtNum(median(a.turns.map((t) => t.perSecond))),
          ceiling: fmtNum(median(b.turns.map((t) => t.perSecond))),
          ratio: round(median(perRound), 3),
          goal: `${round(Math.min(...perRound), 2)}–${round(Math.max(...perRound), 2)}`,
        },
        {
          scenario: `compare ${shape.name}`,
          metric: "peekd's CPU per command, µs (user + system), median",
          value: fmtNum(median(a.turns.map((t) => t.cpuUs))),
          ceiling: fmtNum(median(b.turns.map((t) => t.cpuUs))),
          ratio: round(median(cpuRound), 3),
          goal: `${round(Math.min(...cpuRound), 2)}–${round(Math.max(...cpuRound), 2)}`,
        },
      );
      details[shape.name] = { [a.label]: a.turns, [b.label]: b.turns };
    }
  } finally {
    await load.stop();
  }
  return {
    scenario: 'compare',
    rows,
    cores: { machine: '', server: 'both peekds under load at once, sharing the machine', load: 'one load generator for both', note: 'not pinned' },
    details,
    notes,
  };
}

/** The comparison's table: the `ceiling` column holds the other commit, `goal` the range of the per-round ratios. */
export function compareMarkdown(result: ScenarioResult): string {
  const short = String(result.details.sha).slice(0, 12);
  const head = ['scenario', 'what is measured', 'this checkout', short, 'ratio (median)', 'ratio per round, min–max'];
  return [
    `Both under load at once: ${String(result.details.rounds)} rounds of ${String(result.details.turnS)} s (each side with its own connections, database and streams); ratios are this checkout over ${short}, per round.`,
    '',
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...result.rows.map((r) => `| ${[r.scenario, r.metric, r.value, r.ceiling, r.ratio?.toFixed(3) ?? '—', r.goal].join(' | ')} |`),
    ...result.notes.map((n) => `\n- ${n}`),
  ].join('\n');
}
