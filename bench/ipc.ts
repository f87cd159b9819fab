// A small request/response protocol over the Node IPC channel between the bench's main
// process and its children (the peekd server, the load generator, the fake peers).
import { fork, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Request {
  id: number;
  op: string;
  args: unknown;
}

interface Response {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

interface Hello {
  hello: true;
  pid: number;
}

export type Handler = (args: any) => unknown;

/** Child side: answers requests with `handlers`; returns once the channel is set up. */
export function serveIpc(handlers: Record<string, Handler>): void {
  if (!process.send) throw new Error('a bench child must be started with an IPC channel');
  process.on('message', (raw: unknown) => {
    const req = raw as Request;
    if (typeof req?.id !== 'number' || typeof req.op !== 'string') return;
    const handler = handlers[req.op];
    const reply = (r: Response) => process.send!(r);
    if (!handler) {
      reply({ id: req.id, ok: false, error: `unknown op ${req.op}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(req.args))
      .then(
        (result) => reply({ id: req.id, ok: true, result }),
        (err: unknown) => reply({ id: req.id, ok: false, error: err instanceof Error ? `${err.message}\n${err.stack ?? ''}` : String(err) }),
      );
  });
  // Dies with its parent: a bench run never leaves children behind.
  process.on('disconnect', () => process.exit(0));
  process.send({ hello: true, pid: process.pid } satisfies Hello);
}

export interface ChildOptions {
  /** bench module to run: server, loadgen, peers, scaleworker (the scale-out scenario's processes), rawpoll (the wake-up's ceiling) or rawhttp (the command scenarios' HTTP floor). */
  module: 'server' | 'loadgen' | 'peers' | 'scaleworker' | 'rawpoll' | 'rawhttp';
  /** Its name in errors (default: the module's). */
  name?: string;
  /** Called as soon as the process exists, before it is ready: a caller that must stop it whatever happens next registers it here. */
  onSpawn?: (child: Child) => void;
  env?: NodeJS.ProcessEnv;
  /** Extra node flags (--expose-gc, --max-old-space-size=…). */
  nodeFlags?: string[];
  /** stdout/stderr of the child go here. */
  logFile: string;
  /** How long to wait for the child's hello (a peekd start runs migrations). */
  startTimeoutMs?: number;
}

/** Parent side: a child process and a typed call() into it. */
export class Child {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; op: string }>();
  private exited = false;

  private constructor(
    readonly proc: ChildProcess,
    readonly name: string,
    readonly logFile: string,
  ) {
    proc.on('message', (raw: unknown) => {
      const res = raw as Response;
      if (typeof res?.id !== 'number') return;
      const p = this.pending.get(res.id);
      if (!p) return;
      this.pending.delete(res.id);
      if (res.ok) p.resolve(res.result);
      else p.reject(new Error(`${this.name}.${p.op}: ${res.error}`));
    });
    proc.on('exit', (code, signal) => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`${this.name} exited (${code ?? signal}) during ${p.op}; see ${logFile}`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  static async start(options: ChildOptions): Promise<Child> {
    const script = fileURLToPath(new URL('./child.mjs', import.meta.url));
    const log = createWriteStream(options.logFile, { flags: 'a' });
    const proc = fork(script, [options.module], {
      env: { ...process.env, ...(options.env ?? {}) },
      execArgv: [...(options.nodeFlags ?? []), ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
    proc.stdout!.pipe(log);
    proc.stderr!.pipe(log);
    const name = options.name ?? options.module;
    const child = new Child(proc, name, options.logFile);
    options.onSpawn?.(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`${name} did not start within ${options.startTimeoutMs ?? 120_000} ms; see ${options.logFile}`));
      }, options.startTimeoutMs ?? 120_000);
      const onMessage = (m: unknown) => {
        if ((m as Hello)?.hello) {
          clearTimeout(timer);
          proc.off('message', onMessage);
          resolve();
        }
      };
      proc.on('message', onMessage);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited with ${code} while starting; see ${options.logFile}`));
      });
    });
    return child;
  }

  call<T = unknown>(op: string, args: unknown = {}, timeoutMs = 600_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited; see ${this.logFile}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}.${op} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        op,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send({ id, op, args } satisfies Request);
    });
  }

  /** Asks the child to exit (op `exit`), then kills it if it does not. */
  async stop(timeoutMs = 30_000): Promise<void> {
    if (this.exited || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    if (this.proc.connected) this.call('exit', {}, timeoutMs).catch(() => undefined);
    else this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await gone;
    clearTimeout(timer);
  }
}
