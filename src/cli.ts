// `peekd` command line: serve, keys, and the operator tools.
import { Command } from 'commander';
import { ConfigError, loadConfig, settingsHelp } from './config';
import { NatsServerNotFoundError } from './nats/embeddedServer';
import { ShardCountMismatchError } from './nats/errors';

const program = new Command('peekd')
  .description('A Matrix homeserver core for peeking (MSC2753 and MSC2444), event-sourced on NATS JetStream')
  .option('-c, --config <file>', 'JSON config file whose keys are the env var names below (env wins)')
  .addHelpText('after', `\nConfiguration (environment variables, or keys of the --config file):\n${settingsHelp()}\n`);

function config() {
  const opts = program.opts<{ config?: string }>();
  return loadConfig(process.env, opts.config ?? process.env.PEEKD_CONFIG);
}

/** Prints one clear line for the errors an operator can fix, and exits non-zero. */
function fail(err: unknown): never {
  if (err instanceof ConfigError || err instanceof NatsServerNotFoundError || err instanceof ShardCountMismatchError) {
    console.error(`peekd: ${err.message}`);
  } else {
    console.error('peekd:', err);
  }
  process.exit(1);
}

program
  .command('serve')
  .description('run peekd (every role in one process unless PEEKD_ROLES says otherwise)')
  .action(async () => {
    try {
      const { startPeekd } = await import('./server');
      const peekd = await startPeekd(config());
      let closing = false;
      const shutdown = async (signal: string) => {
        if (closing) return;
        closing = true;
        peekd.logger.info({ signal }, 'shutting down');
        await peekd.close();
        process.exit(0);
      };
      process.on('SIGINT', () => void shutdown('SIGINT'));
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
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
      const { loadOrCreateSigningKeyFile } = await import('./crypto');
      const cfg = config();
      const { key, created } = await loadOrCreateSigningKeyFile(cfg.signingKeyPath);
      console.log(`${created ? 'generated' : 'kept existing'} ${key.keyId} in ${cfg.signingKeyPath}`);
    } catch (err) {
      fail(err);
    }
  });

await program.parseAsync(process.argv);
