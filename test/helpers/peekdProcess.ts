// Runs the real `peekd serve` (bin/peekd.mjs) as a child process for a test, in its own temp
// dir, with its output captured line by line (and to <dir>/peekd.log). Readiness is either
// GET /_matrix/client/versions answering 200 or a caller-chosen log line. `stop()` sends
// SIGTERM and escalates to SIGKILL; the child dies with the test process (spawnTied).
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';

// freePort() (for PEEKD_LISTEN) lives in ./natsCluster.
import { spawnTied } from './natsCluster.ts';

const BIN = fileURLToPath(new URL('../../bin/peekd.mjs', import.meta.url));

/** The log lines (pino `msg`) peekd writes once it is up, whatever its roles. */
export const READY_MESSAGES: readonly string[] = ['room host holds its shards', 'peekd is ready', 'peekd started'];

/** The JSON object of a log line, or undefined when the line is not JSON. */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const v: unknown = JSON.parse(line);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Readiness predicate: a JSON log line whose msg is one of READY_MESSAGES. */
export function readyLogLine(line: string): boolean {
  const msg = parseLogLine(line)?.msg;
  return typeof msg === 'string' && READY_MESSAGES.includes(msg);
}

export interface PeekdProcessOptions {
  /** Added to process.env (wins over it). PEEKD_LOG_LEVEL defaults to 'info'. */
  env: Record<string, string>;
  /** A label for errors and the temp dir. */
  name?: string;
  /** Default 60 s. The process is SIGKILLed when it is not ready by then. */
  readyTimeoutMs?: number;
  /**
   * Ready when this returns true for an output line. Default: with the http role, polling
   * GET http://<PEEKD_LISTEN>/_matrix/client/versions until 200 (or, for port 0, the
   * 'peekd is ready' line); without it, readyLogLine.
   */
  ready?: (line: string) => boolean;
}

export interface PeekdExit {
  code: number | null;
  signal: string | null;
}

export interface PeekdProcess {
  pid: number;
  name: string;
  /** http://host:port, when the process has the http role. */
  url?: string;
  /** Every stdout and stderr line so far, in arrival order. */
  lines: string[];
  /** The temp dir (cwd) and its log file; removed once the process exited. */
  dir: string;
  logFile: string;
  /** Sends `signal` (default SIGKILL); resolves with the exit code once it exited. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /**
   * SIGTERM, up to 15 s to exit, then SIGKILL; resolves with the exit code. peekd installs its
   * SIGTERM handler only after startup, and logs its ready lines just before: a stop() right
   * after log-line readiness may end it by the signal (code null) instead of a clean exit 0.
   */
  stop(): Promise<number | null>;
  exited: Promise<PeekdExit>;
}

/** Splits a stream into lines, calling `onLine` for each (the last partial line at the end). */
export function splitLines(stream: Readable, onLine: (line: string) => void): Promise<void> {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const p of parts) onLine(p.replace(/\r$/, ''));
  });
  return new Promise((resolve) => {
    const done = () => {
      if (partial) onLine(partial);
      partial = '';
      resolve();
    };
    stream.once('end', done);
    stream.once('close', done);
  });
}

export async function startPeekdProcess(opts: PeekdProcessOptions): Promise<PeekdProcess> {
  const name = opts.name ?? 'peekd';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
  const env: NodeJS.ProcessEnv = { ...process.env, PEEKD_LOG_LEVEL: 'info', ...opts.env };
  const roles = (env.PEEKD_ROLES ?? '').trim();
  const http = roles === '' || roles.split(',').some((r) => r.trim() === 'http');
  const listen = env.PEEKD_LISTEN;
  let url = http && listen ? `http://${listen}` : undefined;
  if (http && !listen && !opts.ready) {
    throw new Error(`${name}: set PEEKD_LISTEN (127.0.0.1:<freePort()>) or pass a ready predicate`);
  }

  const dir = mkdtempSync(join(tmpdir(), `peekd-proc-${name.replace(/[^\w.-]/g, '_')}-`));
  const logFile = join(dir, 'peekd.log');
  const log = createWriteStream(logFile);
  const lines: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  const onLine = (line: string) => {
    lines.push(line);
    log.write(`${line}\n`);
    for (const w of lineWaiters) w(line);
  };

  // Tied to this process: SIGKILLed if the test process dies (see spawnTied).
  const child = spawnTied(process.execPath, [BIN, 'serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.on('error', (err) => onLine(`[spawn error] ${err.message}`));
  const outputDone = Promise.all([splitLines(child.stdout!, onLine), splitLines(child.stderr!, onLine)]);

  const exited = new Promise<PeekdExit>((resolve) => {
    child.once('exit', async (code, signal) => {
      // Let the pipes drain, but don't hang on a grandchild that kept them open.
      await Promise.race([outputDone, new Promise((r) => setTimeout(r, 1000).unref())]);
      await new Promise<void>((r) => log.end(() => r()));
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, signal });
    });
  });
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  const tailText = () => lines.slice(-30).join('\n');

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> => {
    if (isRunning() && child.pid !== undefined) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // exited in the meantime
      }
    }
    return (await exited).code;
  };
  const stop = async (): Promise<number | null> => {
    if (!isRunning()) return (await exited).code;
    const timer = setTimeout(() => void kill('SIGKILL'), 15_000);
    try {
      return await kill('SIGTERM');
    } finally {
      clearTimeout(timer);
    }
  };

  // Readiness: whichever of (predicate line | HTTP poll) applies, raced against exit and the timeout.
  const predicate = opts.ready ?? (http && listen && !/:0$/.test(listen) ? undefined : http ? (l: string) => parseLogLine(l)?.msg === 'peekd is ready' : readyLogLine);
  let settled = false;
  try {
    await new Promise<void>((resolve, reject) => {
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        lineWaiters.clear();
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`${name} was not ready in ${readyTimeoutMs} ms; last output:\n${tailText()}`)), readyTimeoutMs);
      void exited.then(({ code, signal }) => finish(new Error(`${name} exited (code ${code}, signal ${signal}) before it was ready; last output:\n${tailText()}`)));
      if (predicate) {
        const check = (line: string) => {
          if (!predicate(line)) return;
          const ready = parseLogLine(line);
          if (http && typeof ready?.url === 'string') url = ready.url;
          finish();
        };
        lines.forEach(check);
        lineWaiters.add(check);
      } else {
        void (async () => {
          while (!settled) {
            try {
              const r = await fetch(`${url}/_matrix/client/versions`, { signal: AbortSignal.timeout(2000) });
              await r.body?.cancel();
              if (r.status === 200) return finish();
            } catch {
              // not listening yet
            }
            await new Promise((r) => setTimeout(r, 100));
          }
        })();
      }
    });
  } catch (err) {
    await kill('SIGKILL');
    throw err;
  }

  return { pid: child.pid!, name, url, lines, dir, logFile, kill, stop, exited };
}
