// A throwaway JetStream cluster for tests: N nats-server processes on loopback, each with
// its own client port, route port, server_name (n1, n2, …) and store dir under one temp
// dir. Nodes can be killed (SIGKILL by default) and restarted with the same config and
// store, so tests can fail over stream leaders. `stop()` kills every node and removes the
// temp dir; nodes die with the test process (see spawnTied), so nothing is orphaned.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { findNatsServer, NatsServerNotFoundError } from '../../src/nats/embeddedServer.ts';

import { freePort, freePorts } from '../../src/nats/freePorts.ts';

export { freePort, freePorts };

export interface ClusterNode {
  /** server_name: n1, n2, … */
  readonly name: string;
  /** Client port on 127.0.0.1. */
  readonly port: number;
  /** Route (cluster) port on 127.0.0.1. */
  readonly clusterPort: number;
  /** nats://127.0.0.1:<port> */
  readonly clientUrl: string;
  /** PID of the current process (of the last one, once it exited). */
  readonly pid: number;
  readonly running: boolean;
  /** Path of this node's log file (appended to across restarts). */
  readonly logFile: string;
  /** Sends `signal` (default SIGKILL) to the process; resolves once it exited. No-op when not running. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** (Re)starts the node with the same config and store dir; resolves when it accepts client connections. */
  start(): Promise<void>;
}

export interface NatsCluster {
  /** Client URLs, one per node. */
  urls: string[];
  /** The client URLs comma-joined: usable as NATS_URL. */
  url: string;
  nodes: ClusterNode[];
  /** The temp dir holding configs, logs and stores. */
  dir: string;
  /** server_name of the stream's current leader; polls (up to timeoutMs, default 15 s) while there is none. */
  streamLeader(stream: string, timeoutMs?: number): Promise<string>;
  nodeByName(name: string): ClusterNode;
  /**
   * Resolves when every node runs, accepts clients and sees a JetStream meta leader, and, with
   * `stream`, the stream has a leader and every replica is current and online. Rejects after
   * timeoutMs (default 30 s) with the last state seen and the nodes' log tails.
   */
  waitHealthy(stream?: string, timeoutMs?: number): Promise<void>;
  /** The last `lines` lines of every node's log, labelled. */
  logTails(lines?: number): string;
  /** Kills every node (SIGKILL) and removes the temp dir. */
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /** Number of nodes; default 3. */
  nodes?: number;
  /** The nats-server binary; default: findNatsServer(). */
  bin?: string;
  /** Bound on the wait for a usable cluster; default 30 s. */
  readyTimeoutMs?: number;
}

// Every child spawnTied started that has not exited: SIGKILLed synchronously if the test process
// exits without stopping it.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

let setprivBin: string | null | undefined;
/** setpriv (util-linux), when it is there and supports --pdeathsig; looked up once. */
function setpriv(): string | null {
  if (setprivBin === undefined) {
    setprivBin = null;
    for (const candidate of ['/usr/bin/setpriv', '/bin/setpriv', '/usr/local/bin/setpriv']) {
      if (spawnSync(candidate, ['--pdeathsig', 'KILL', 'true'], { stdio: 'ignore' }).status === 0) {
        setprivBin = candidate;
        break;
      }
    }
  }
  return setprivBin;
}

/**
 * spawn(), tied to this process's life: on Linux the child runs under `setpriv --pdeathsig KILL`
 * (setpriv execs the command, so the PID is the command's), so the kernel kills it even when
 * this process dies abruptly — vitest stops its fork workers with SIGTERM, which skips 'exit'
 * handlers. Everywhere, a process 'exit' hook SIGKILLs it too.
 */
export function spawnTied(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const sp = setpriv();
  const child = sp ? spawn(sp, ['--pdeathsig', 'KILL', command, ...args], options) : spawn(command, args, options);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) {
        try {
          if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return `${err.name}${code !== undefined ? `[${String(code)}]` : ''}: ${err.message}`;
}

/**
 * Resolves once something on 127.0.0.1:`port` sends a NATS INFO line; rejects at the
 * deadline, or as soon as `gone()` reports that the process exited.
 */
async function waitForInfo(port: number, deadline: number, gone: () => string | null): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = netConnect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => finish(false), 1000);
      let buf = '';
      function finish(v: boolean) {
        clearTimeout(timer);
        sock.destroy();
        resolve(v);
      }
      sock.on('data', (d) => {
        buf += d.toString();
        if (buf.startsWith('INFO ')) finish(true);
      });
      sock.on('error', () => finish(false));
      sock.on('close', () => finish(false));
    });
    if (ok) return;
    const why = gone();
    if (why) throw new Error(why);
    if (Date.now() > deadline) throw new Error(`nothing answered on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function nodeConfig(o: { name: string; port: number; clusterPort: number; storeDir: string; clusterName?: string; routes: number[] }): string {
  const lines = [
    `server_name: ${o.name}`,
    `listen: 127.0.0.1:${o.port}`,
    'max_payload: 8MB',
    'jetstream {',
    `  store_dir: ${JSON.stringify(o.storeDir)}`,
    '  max_memory_store: 64MB',
    '  max_file_store: 1GB',
    '}',
  ];
  if (o.clusterName) {
    lines.push('cluster {', `  name: ${o.clusterName}`, `  listen: 127.0.0.1:${o.clusterPort}`, '  routes: [', ...o.routes.map((p) => `    nats-route://127.0.0.1:${p}`), '  ]', '}');
  }
  return `${lines.join('\n')}\n`;
}

class Node implements ClusterNode {
  readonly clientUrl: string;
  readonly logFile: string;
  private child?: ChildProcess;
  private exitWait?: Promise<void>;

  constructor(
    readonly name: string,
    readonly port: number,
    readonly clusterPort: number,
    private readonly bin: string,
    private readonly configFile: string,
    dir: string,
  ) {
    this.clientUrl = `nats://127.0.0.1:${port}`;
    this.logFile = join(dir, `${name}.log`);
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  get running(): boolean {
    return this.child !== undefined && !exited(this.child);
  }

  /** Spawns the process without waiting for it to accept clients. */
  spawn(): void {
    if (this.running) return;
    const fd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawnTied(this.bin, ['-c', this.configFile], { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    child.on('error', () => {}); // surfaced through 'exit' / the readiness wait
    this.child = child;
    this.exitWait = new Promise((resolve) => {
      if (exited(child)) resolve();
      else child.once('exit', () => resolve());
    });
  }

  /** Waits until the current process serves INFO on its client port. */
  async accepting(deadline: number): Promise<void> {
    const child = this.child;
    if (!child) throw new Error(`${this.name} was never started`);
    try {
      await waitForInfo(this.port, deadline, () => (exited(child) ? `exited (code ${child.exitCode}, signal ${child.signalCode})` : null));
    } catch (err) {
      throw new Error(`nats-server ${this.name} (pid ${child.pid}) did not accept clients: ${(err as Error).message}\n${this.name}.log:\n${tail(this.logFile, 30)}`, { cause: err });
    }
  }

  async start(): Promise<void> {
    this.spawn();
    await this.accepting(Date.now() + 15_000);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || exited(child) || child.pid === undefined) return;
    try {
      process.kill(child.pid, signal);
    } catch {
      // exited in the meantime
    }
    await this.exitWait;
  }
}

/** Starts an N-node (default 3) JetStream cluster on loopback and waits until R-N streams can be created. */
export async function startNatsCluster(opts: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = opts.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new Error(`nodes must be a positive integer, got ${count}`);
  const bin = opts.bin !== undefined ? findNatsServer({ PEEKD_NATS_SERVER: opts.bin }) : findNatsServer();
  if (!bin) throw new NatsServerNotFoundError();
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;

  const dir = mkdtempSync(join(tmpdir(), 'peekd-nats-cluster-'));
  const clusterName = count > 1 ? `c${randomBytes(4).toString('hex')}` : undefined;
  const ports = await freePorts(count * 2);
  const clusterPorts = ports.slice(count);
  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
    const name = `n${i + 1}`;
    const storeDir = join(dir, name);
    mkdirSync(storeDir);
    const configFile = join(dir, `${name}.conf`);
    const routes = clusterPorts.filter((_, j) => j !== i);
    writeFileSync(configFile, nodeConfig({ name, port: ports[i]!, clusterPort: clusterPorts[i]!, storeDir, clusterName, routes }));
    nodes.push(new Node(name, ports[i]!, clusterPorts[i]!, bin, configFile, dir));
  }
  const urls = nodes.map((n) => n.clientUrl);

  let admin: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  const logTails = (lines = 20) => nodes.map((n) => `--- ${n.name} (${n.running ? `pid ${n.pid}` : 'not running'}) ${n.logFile}\n${tail(n.logFile, lines)}`).join('\n');

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await admin?.close().catch(() => {});
    await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
  };

  /** A JetStream manager on a connection to the whole cluster (reconnects forever). */
  const manager = async (): Promise<JetStreamManager> => {
    if (!admin) {
      admin = await connect({ servers: urls, name: 'natsCluster-admin', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 2000 });
    }
    jsm ??= await jetstreamManager(admin, { timeout: 1000, checkAPI: false });
    return jsm;
  };

  /** Polls `check` until it returns null (done) or the deadline passes; `check` returns what is still missing. */
  const pollUntil = async (what: string, timeoutMs: number, check: () => Promise<string | null>): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let last: string;
    for (;;) {
      try {
        const missing = await check();
        if (missing === null) return;
        last = missing;
      } catch (err) {
        last = errorText(err);
      }
      if (Date.now() > deadline) {
        throw new Error(`NATS cluster: ${what} not reached in ${timeoutMs} ms; last: ${last}\n${logTails()}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  /** Every node accepts clients and, asked directly, answers a JetStream account-info request. */
  const nodesHealthy = async (): Promise<string | null> => {
    for (const n of nodes) {
      if (!n.running) return `${n.name} is not running`;
      const nc = await connect({ servers: n.clientUrl, name: `natsCluster-probe-${n.name}`, reconnect: false, ignoreClusterUpdates: true, timeout: 1000 });
      try {
        const m = await jetstreamManager(nc, { timeout: 1500, checkAPI: false });
        await m.getAccountInfo();
      } catch (err) {
        return `${n.name}: ${errorText(err)}`;
      } finally {
        await nc.close().catch(() => {});
      }
    }
    return null;
  };

  const streamHealthy = async (stream: string): Promise<string | null> => {
    const info = await (await manager()).streams.info(stream);
    const c = info.cluster;
    if (!c?.leader) return `${stream} has no leader`;
    const want = Math.max(0, info.config.num_replicas - 1);
    const replicas = c.replicas ?? [];
    if (replicas.length < want) return `${stream} (leader ${c.leader}) lists ${replicas.length} of ${want} followers`;
    const behind = replicas.filter((r) => !r.current || r.offline);
    if (behind.length) return `${stream} (leader ${c.leader}) followers not current: ${behind.map((r) => `${r.name}${r.offline ? ' offline' : ''} lag ${r.lag}`).join(', ')}`;
    return null;
  };

  try {
    for (const n of nodes) n.spawn();
    const deadline = Date.now() + readyTimeoutMs;
    await Promise.all(nodes.map((n) => n.accepting(deadline)));
    const jsmReady = await manager();
    await pollUntil('a JetStream meta leader', Math.max(1000, deadline - Date.now()), async () => {
      await jsmReady.getAccountInfo();
      return null;
    });
    // An R-N stream can be placed only once every node has joined the meta group.
    const probe = `probe_${randomBytes(4).toString('hex')}`;
    await pollUntil(`an R${Math.min(count, 5)} stream`, Math.max(1000, deadline - Date.now()), async () => {
      await jsmReady.streams.add({ name: probe, subjects: [`${probe}.>`], num_replicas: Math.min(count, 5), storage: StorageType.Memory });
      await jsmReady.streams.delete(probe);
      return null;
    });
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    urls,
    url: urls.join(','),
    nodes,
    dir,
    logTails,
    nodeByName(name: string): ClusterNode {
      const n = nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no node named ${name} (nodes: ${nodes.map((x) => x.name).join(', ')})`);
      return n;
    },
    async streamLeader(stream: string, timeoutMs = 15_000): Promise<string> {
      let leader: string | undefined;
      await pollUntil(`a leader for ${stream}`, timeoutMs, async () => {
        const info = await (await manager()).streams.info(stream);
        leader = info.cluster?.leader;
        return leader ? null : `${stream} has no leader`;
      });
      return leader!;
    },
    async waitHealthy(stream?: string, timeoutMs = 30_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      await pollUntil('all nodes healthy', timeoutMs, nodesHealthy);
      if (stream !== undefined) await pollUntil(`stream ${stream} healthy`, Math.max(1000, deadline - Date.now()), () => streamHealthy(stream));
    },
    stop,
  };
}
