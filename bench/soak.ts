// `npm run soak [-- --runs N]`: repeats the two failover scenarios of
// test/integration/failover.test.ts (NATS node loss, room host loss) N times (default 3), each
// with its own 3-node JetStream cluster, database and peekd processes, and prints per run and in
// total the requests by status, 503s, retries, latency and invariant violations. Exits 1 when any
// run violated an invariant.
//
// Needs nats-server on PATH (or PEEKD_NATS_SERVER); NATS_URL is not used. With DATABASE_URL (a
// Postgres server; the main mode, as in CI) every scenario gets a database of its own there and
// runs peekd as processes. Without it, the scenarios' fallback runs (embedded PGlite: the node
// loss peekd process on PGlite in its data dir; the room host loss with four in-process peekd
// instances on one in-memory PGlite, the crash an abrupt close of a room host's NATS connection
// instead of a SIGKILL; invariant e through the admin API verify) — weaker, see
// test/helpers/failoverScenarios.ts. FAILOVER_DUMP_DIR=<dir> keeps every run's records and
// process logs there.
import { formatViolations, INVARIANTS, type Invariant } from '../test/helpers/failoverLoad.ts';
import { formatScenario, nodeLossScenario, roomHostLossScenario, type ScenarioResult } from '../test/helpers/failoverScenarios.ts';

function usage(): string {
  return [
    'usage: npm run soak [-- --runs N] [--only node-loss|room-host-loss] [--verbose]',
    '',
    '  --runs N     repeat both scenarios N times (default 3)',
    '  --only S     run one scenario only',
    '  --verbose    print progress lines and every note',
    '',
    'Needs nats-server; starts its own NATS clusters. DATABASE_URL=<Postgres server URL>: the main',
    'mode (peekd processes, SIGKILLs, `peekd verify`); unset: the embedded PGlite fallback.',
    "FAILOVER_DUMP_DIR=<dir> writes each run's records and process logs there.",
  ].join('\n');
}

function parseArgs(argv: string[]): { runs: number; only?: string; verbose: boolean } | string {
  let runs = 3;
  let only: string | undefined;
  let verbose = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--runs' || a.startsWith('--runs=')) {
      const v = a.includes('=') ? a.slice('--runs='.length) : argv[++i];
      runs = Number(v);
      if (!Number.isInteger(runs) || runs < 1) return `--runs needs a positive integer, got ${JSON.stringify(v)}`;
    } else if (a === '--only' || a.startsWith('--only=')) {
      only = a.includes('=') ? a.slice('--only='.length) : argv[++i];
      if (only !== 'node-loss' && only !== 'room-host-loss') return `--only needs node-loss or room-host-loss, got ${JSON.stringify(only)}`;
    } else if (a === '--verbose' || a === '-v') {
      verbose = true;
    } else if (a === '--help' || a === '-h') {
      return '';
    } else {
      return `unknown argument ${a}`;
    }
  }
  return { runs, only, verbose };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (typeof args === 'string') {
    if (args) console.error(`soak: ${args}\n`);
    console.log(usage());
    return args ? 2 : 0;
  }
  const databaseUrl = process.env.DATABASE_URL ?? '';
  if (!databaseUrl) {
    console.error(
      'soak: DATABASE_URL is unset: running the embedded PGlite fallback (room host loss in-process, its crash an abrupt NATS close, not a SIGKILL). ' +
        'Set DATABASE_URL to a Postgres server (e.g. postgres://postgres@127.0.0.1:5432/postgres) for the main mode.',
    );
  }
  const scenarios = [
    { key: 'node-loss', run: nodeLossScenario },
    { key: 'room-host-loss', run: roomHostLossScenario },
  ].filter((s) => !args.only || s.key === args.only);
  const log = args.verbose ? (l: string) => console.log(`  ${l}`) : undefined;

  const all: { run: number; result: ScenarioResult }[] = [];
  const started = Date.now();
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    console.error('soak: interrupted; finishing the scenario in progress (its processes are stopped at its end)');
  });
  for (let run = 1; run <= args.runs && !interrupted; run++) {
    console.log(`--- run ${run} of ${args.runs}`);
    for (const s of scenarios) {
      if (interrupted) break;
      const result = await s.run({ databaseUrl, log });
      all.push({ run, result });
      console.log(formatScenario(result));
      if (args.verbose) for (const n of result.notes) console.log(`  note: ${n}`);
      if (result.violations.length > 0) {
        console.log(formatViolations(result.violations, result.logs));
        for (const n of result.notes) if (!args.verbose) console.log(`  note: ${n}`);
      }
    }
  }

  // Totals.
  const byStatus: Record<string, number> = {};
  let requests = 0;
  let s503 = 0;
  let clientRetries = 0;
  let serverRetries = 0;
  let maxLatency = 0;
  const violationsBy: Partial<Record<Invariant, number>> = {};
  for (const { result } of all) {
    requests += result.counts.requests;
    s503 += result.counts.status503;
    clientRetries += result.counts.clientRetries;
    serverRetries += result.counts.serverRetries ?? 0;
    maxLatency = Math.max(maxLatency, result.counts.maxLatencyMs);
    for (const [s, n] of Object.entries(result.counts.byStatus)) byStatus[s] = (byStatus[s] ?? 0) + n;
    for (const v of result.violations) violationsBy[v.invariant] = (violationsBy[v.invariant] ?? 0) + 1;
  }
  const failed = all.filter((a) => a.result.violations.length > 0);
  console.log('');
  console.log(`=== soak: ${all.length} scenario runs in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  for (const { run, result } of all) {
    console.log(
      `  run ${run} ${result.name.padEnd(15)} ${result.violations.length === 0 ? 'OK  ' : 'FAIL'} ${String(result.counts.requests).padStart(5)} requests, 503s ${result.counts.status503}, max latency ${result.counts.maxLatencyMs} ms, violations ${result.violations.length}, ${(result.durationMs / 1000).toFixed(1)} s`,
    );
  }
  const statuses = Object.entries(byStatus)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([s, n]) => `${s}:${n}`)
    .join(' ');
  console.log(`  total: ${requests} requests [${statuses}], 503s ${s503}, client retries ${clientRetries}, server retries ${serverRetries}, max latency ${maxLatency} ms`);
  const vtotal = Object.values(violationsBy).reduce((a, b) => a + (b ?? 0), 0);
  console.log(
    `  invariant violations: ${vtotal}${
      vtotal
        ? ` (${Object.entries(violationsBy)
            .map(([k, n]) => `${k}: ${n} — ${INVARIANTS[k as Invariant]}`)
            .join('; ')})`
        : ''
    }`,
  );
  if (interrupted) return 130;
  return failed.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error('soak:', err);
    process.exit(1);
  },
);
