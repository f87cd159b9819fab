// `peekd` command line: serve, keys, and the operator tools.
import { Command } from 'commander';
import type { Peekd } from './peekd.ts';
import { ALL_ROLES, ConfigError, loadConfig, settingsHelp } from './config.ts';
import { NatsServerNotFoundError } from './nats/embeddedServer.ts';
import { ShardCountMismatchError } from './nats/errors.ts';
import { DomainError } from './actors/errors.ts';

const program = new Command('peekd')
  .description('A Matrix homeserver core for peeking (MSC2753 and MSC2444), event-sourced on NATS JetStream')
  .option('-c, --config <file>', 'JSON config file whose keys are the env var names below (env wins)')
  .addHelpText('after', `\nConfiguration (environment variables, or keys of the --config file):\n${settingsHelp()}\n`);

function config() {
  const opts = program.opts<{ config?: string }>();
  return loadConfig(process.env, opts.config ?? process.env.PEEKD_CONFIG);
}

/**
 * One line for an error: its message for the errors an operator can fix, its name and
 * message for any other. Never the whole object: its other properties may hold a secret
 * (Node's ERR_INVALID_URL carries the URL it refused, password and all).
 */
function oneLine(err: unknown): string {
  if (err instanceof ConfigError || err instanceof NatsServerNotFoundError || err instanceof ShardCountMismatchError || err instanceof DomainError) return err.message;
  if (!(err instanceof Error)) return `unexpected ${typeof err} thrown`;
  // A system error's code (ECONNREFUSED) says what failed where the message may not (an AggregateError's is empty).
  const code = (err as NodeJS.ErrnoException).code;
  return `${err.name}: ${err.message}${typeof code === 'string' && !err.message.includes(code) ? ` (${code})` : ''}`;
}

/** Prints one line saying what failed, and exits non-zero. */
function fail(err: unknown): never {
  console.error(`peekd: ${oneLine(err)}`);
  process.exit(1);
}

program
  .command('serve')
  .description('run peekd (every role in one process unless PEEKD_ROLES says otherwise)')
  .action(async () => {
    // Signals are taken from the first moment: a stop asked for while peekd is still
    // starting waits for the start, then shuts down cleanly.
    let peekd: Peekd | undefined;
    let stopAsked: string | undefined;
    let closing = false;
    // The graceful shutdown runs in order (src/shutdown.ts) within PEEKD_SHUTDOWN_TIMEOUT_MS;
    // past it peekd exits non-zero, naming the step that was still running.
    const shutdown = async (signal: string) => {
      stopAsked ??= signal;
      if (!peekd || closing) return;
      closing = true;
      const p = peekd;
      const timeoutMs = p.config.shutdownTimeoutMs;
      p.logger.info({ signal, timeoutMs }, 'shutting down');
      const deadline = setTimeout(() => {
        const running = p.shutdown.running ?? 'the last steps';
        p.logger.error({ running, timeoutMs }, 'shutdown did not finish in time');
        console.error(`peekd: shutdown did not finish within ${timeoutMs} ms (PEEKD_SHUTDOWN_TIMEOUT_MS); still running: ${running}`);
        process.exit(1);
      }, timeoutMs);
      await p.close();
      clearTimeout(deadline);
      p.logger.info('shutdown complete');
      process.exit(0);
    };
    process.on('SIGINT', () => void shutdown('SIGINT'));
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    // A parent that died without passing a signal on (a wrapper killed outright) leaves
    // peekd adopted by another process: shut down as if stopped.
    const parent = process.ppid;
    setInterval(() => {
      if (process.ppid !== parent) void shutdown('parent exited');
    }, 1_000).unref();
    // Nothing dies unnoticed: a stray rejection is logged with its context and peekd goes
    // on (every task it runs has its own retry); a thrown callback leaves the process in an
    // unknown state, so it is logged and peekd exits non-zero with one clear line.
    process.on('unhandledRejection', (reason) => {
      const log = peekd?.logger;
      if (log) log.error({ err: reason }, 'unhandled promise rejection (peekd keeps running)');
      else console.error(`peekd: unhandled promise rejection: ${oneLine(reason)}`);
    });
    process.on('uncaughtException', (err, origin) => {
      peekd?.logger.fatal({ err, origin }, 'uncaught exception');
      console.error(`peekd: stopping after an uncaught exception (${origin}): ${err instanceof Error ? err.message : String(err)}`);
      process.exit(70);
    });
    try {
      const { startPeekd } = await import('./server.ts');
      const cfg = config();
      if (cfg.roles.length < ALL_ROLES.length && (!cfg.natsUrl || !cfg.databaseUrl)) {
        // Each process would start its own nats-server and embedded database: nothing shared.
        throw new ConfigError('PEEKD_ROLES splits the roles across processes: they must share one NATS (NATS_URL) and one Postgres (DATABASE_URL)');
      }
      peekd = await startPeekd(cfg);
      if (stopAsked) await shutdown(stopAsked);
    } catch (err) {
      fail(err);
    }
  });

const keys = program.command('keys').description('signing keys');
keys
  .command('generate')
  .description('generate the ed25519 signing key file (PEEKD_SIGNING_KEY) if it does not exist')
  .action(async () => {
    try {
      const { loadOrCreateSigningKeyFile } = await import('./crypto/index.ts');
      const cfg = config();
      const { key, created } = await loadOrCreateSigningKeyFile(cfg.signingKeyPath);
      console.log(`${created ? 'generated' : 'kept existing'} ${key.keyId} in ${cfg.signingKeyPath}`);
    } catch (err) {
      fail(err);
    }
  });

keys
  .command('rotate')
  .description('retire the current signing key (still listed under old_verify_keys) and generate a new one; restart peekd afterwards')
  .action(async () => {
    try {
      const { loadOrCreateSigningKeyFile } = await import('./crypto/index.ts');
      const { rotateSigningKey } = await import('./federation/ownKeys.ts');
      const cfg = config();
      const { key } = await loadOrCreateSigningKeyFile(cfg.signingKeyPath);
      const next = await rotateSigningKey(cfg.signingKeyPath, key, Date.now());
      console.log(`retired ${key.keyId}; the signing key is now ${next.keyId}`);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('replay')
  .description('rebuild read models from sequence 1 into shadow tables and swap them in (works while peekd serves)')
  .option('-p, --projection <name>', 'one projection, or all', 'all')
  .action(async (opts: { projection: string }) => {
    try {
      const { runReplay } = await import('./operator/commands.ts');
      await runReplay(config(), opts.projection);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('verify')
  .description('compare live read models with a rebuild from the log; exits 1 on any difference')
  .option('-p, --projection <name>', 'one projection, or all', 'all')
  .action(async (opts: { projection: string }) => {
    try {
      const { runVerify } = await import('./operator/commands.ts');
      const ok = await runVerify(config(), opts.projection);
      process.exit(ok ? 0 : 1);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('audit')
  .description('list peek events: who peeked what, when, and why it ended')
  .option('--room <roomId>', 'events of one room')
  .option('--user <userId>', 'events of one local user')
  .option('--device <deviceId>', 'with --user: one device')
  .option('--server <serverName>', 'events of one remote server (inbound and outbound peeks)')
  .option('--since <time>', 'from this time (ms since the epoch or ISO 8601)')
  .option('--until <time>', 'up to this time (ms since the epoch or ISO 8601)')
  .option('--format <format>', 'table or jsonl', 'table')
  .action(async (opts: { room?: string; user?: string; device?: string; server?: string; since?: string; until?: string; format: string }) => {
    try {
      if (opts.format !== 'table' && opts.format !== 'jsonl') throw new ConfigError('--format must be table or jsonl');
      const { parseAuditQuery } = await import('./projections/auditQuery.ts');
      const query = parseAuditQuery({
        room_id: opts.room,
        user_id: opts.user,
        device_id: opts.device,
        server_name: opts.server,
        since: opts.since,
        until: opts.until,
        limit: '1000',
      });
      const { runAudit } = await import('./operator/commands.ts');
      await runAudit(config(), query, opts.format);
    } catch (err) {
      fail(err);
    }
  });

await program.parseAsync(process.argv);
