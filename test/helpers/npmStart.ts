// `npm start` in the repository root as a child process (tied to the test process: see
// spawnTied), its output captured line by line — peekd's too, since npm passes its stdio
// on to the script — and a look at which processes are left, by what they carry in their
// command line or environment (Linux /proc).
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { spawnTied } from './natsCluster.ts';
import { splitLines } from './peekdProcess.ts';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface NpmStart {
  child: ChildProcess;
  /** The npm process's PID (spawnTied execs npm in place). */
  pid: number;
  /** Every stdout and stderr line so far, npm's and the script's, in arrival order. */
  lines: string[];
  /** npm exited (its script may live on). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every holder of npm's stdout and stderr closed them: npm and whatever it started are gone. */
  closed: Promise<void>;
}

/**
 * The environment of the test process without what vitest, npx and the test services put
 * there (VITEST*, NODE_OPTIONS, npm_*, PEEKD_*, DATABASE_URL, NATS_URL), plus `extra`.
 */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(VITEST|NODE_OPTIONS$|npm_|PEEKD_|DATABASE_URL$|NATS_URL$)/i.test(k)) continue;
    env[k] = v;
  }
  return { ...env, npm_config_update_notifier: 'false', ...extra };
}

/** Spawns `npm start` in the repository root with `env` (see cleanEnv). */
export function startNpm(env: NodeJS.ProcessEnv): NpmStart {
  const child = spawnTied('npm', ['start'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  child.on('error', (err) => lines.push(`[spawn error] ${err.message}`));
  void splitLines(child.stdout!, (l) => lines.push(l));
  void splitLines(child.stderr!, (l) => lines.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return { child, pid: child.pid!, lines, exited, closed };
}

export interface ProcessInfo {
  pid: number;
  /** The command line, arguments space-separated. */
  args: string;
}

/**
 * Live processes (other than this one) whose command line or environment contains
 * `marker` — e.g. a unique temp dir given as PEEKD_DATA_DIR. Zombies (exited, not yet
 * reaped) are left out: they hold no port and run nothing.
 */
export function processesMentioning(marker: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      let environ = '';
      try {
        environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      } catch {
        // another user's process: its command line is all we can see
      }
      if (cmdline.includes(marker) || environ.includes(marker)) found.push({ pid, args: cmdline });
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/** SIGKILLs each process (test cleanup after a failure); ignores those already gone. */
export function killAll(processes: readonly ProcessInfo[]): void {
  for (const p of processes) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
