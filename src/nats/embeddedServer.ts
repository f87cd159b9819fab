// Starts a private nats-server (JetStream on, store under the data dir) when NATS_URL is
// unset, and stops it on exit. Used by `peekd serve` and by the tests' fallback.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { makeStoreDir } from '../store/privateDirs.ts';
import { freePort } from './freePorts.ts';

export const NATS_INSTALL_HINT =
  'nats-server was not found on PATH: install it (Debian/Ubuntu: `apt-get install nats-server`; ' +
  'others: https://docs.nats.io/running-a-nats-service/introduction/installation) or set NATS_URL to a NATS server with JetStream';

export class NatsServerNotFoundError extends Error {
  override readonly name = 'NatsServerNotFoundError';
  /** `configured`: the path PEEKD_NATS_SERVER gave, which is not an executable file. */
  constructor(configured?: string) {
    super(
      configured === undefined
        ? NATS_INSTALL_HINT
        : `PEEKD_NATS_SERVER is ${JSON.stringify(configured)}, which is not an executable file: point it at nats-server (Debian/Ubuntu: \`apt-get install nats-server\`), unset it to look on PATH, or set NATS_URL to a NATS server with JetStream`,
    );
  }
}

/**
 * Finds nats-server: PEEKD_NATS_SERVER when set (a path; nothing else is tried), else on
 * PATH and in the sbin directories Debian installs it to.
 */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.PEEKD_NATS_SERVER) {
    try {
      accessSync(env.PEEKD_NATS_SERVER, constants.X_OK);
      return env.PEEKD_NATS_SERVER;
    } catch {
      return null;
    }
  }
  const dirs = [...(env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, 'nats-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

export interface EmbeddedNats {
  url: string;
  stop(): Promise<void>;
}

export interface EmbeddedNatsOptions {
  storeDir: string;
  /** The binary; default: findNatsServer(). */
  bin?: string;
  configFile?: string;
  port?: number;
}

export async function startEmbeddedNats(options: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const bin = options.bin !== undefined ? findNatsServer({ PEEKD_NATS_SERVER: options.bin }) : findNatsServer();
  if (!bin) throw new NatsServerNotFoundError(options.bin ?? (process.env.PEEKD_NATS_SERVER || undefined));
  makeStoreDir(options.storeDir); // 0700: the streams hold every event
  const port = options.port ?? (await freePort());
  const args = [...(options.configFile ? ['-c', options.configFile] : []), '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', options.storeDir];
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not become ready in 15 s:\n${log}`)), 15_000);
    child.stderr!.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes('Server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}:\n${log}`));
    });
  });
  child.stderr!.resume();
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    });
  return { url: `nats://127.0.0.1:${port}`, stop };
}
