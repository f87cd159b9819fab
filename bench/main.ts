// `npm run bench [-- <scenario>…] [--quick] [--profile | --no-profile]`: runs the scenarios, prints the
// results table (peekd's number, the ceiling measured in the same run, the ratio, the
// goal), the cores each side had and, for every goal missed, where the time goes; writes
// bench/results/<date>-<scenario>.json and bench/results/latest.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hotRoom, manyRooms } from './commands.ts';
import { buildRef, compareMarkdown, runCompare } from './compare.ts';
import { federation } from './federation.ts';
import { coresReport, log, machineInfo, markQuick, RESULTS_DIR, Services, tableMarkdown, writeResult, type MachineInfo, type Row, type ScenarioResult } from './harness.ts';
import { memory } from './memory.ts';
import { rebuild } from './rebuild.ts';
import type { Scenario } from './scenario.ts';
import { scaleOut } from './scaleout.ts';
import { wakeUp } from './wakeup.ts';

const SCENARIOS: Scenario[] = [manyRooms, hotRoom, rebuild, wakeUp, memory, federation, scaleOut];

function usage(): string {
  return [
    'usage: npm run bench [-- [scenario…] [--quick] [--profile | --no-profile]]',
    '',
    'scenarios (default: all, in this order):',
    ...SCENARIOS.map((s) => `  ${s.name.padEnd(12)} ${s.summary}`),
    '',
    '  --quick       scaled-down sizes (a smoke run; do not publish its numbers)',
    '  --profile     profile peekd in every scenario that can, goal met or not',
    '  --no-profile  do not profile peekd when a goal is missed',
    "  --against=REF instead of the scenarios: this checkout's peekd and REF's (a commit, branch",
    '                or tag; its dist/ built into bench/results/compare/) under the same command',
    '                load at once (many-rooms and hot-room shapes)',
    '',
    'Services: NATS_URL and DATABASE_URL when set; otherwise a throwaway nats-server and PGlite.',
    'BENCH_PIN=1 pins peekd to CPU 0 and the load generator to CPU 1 (taskset).',
  ].join('\n');
}

/** The services (NATS_URL and DATABASE_URL, or throwaway ones), cleaned up on a signal, and the machine they run on. */
async function openServices(): Promise<{ services: Services; machine: MachineInfo & { nats: string; database: string } }> {
  const services = await Services.open();
  cleanUpOnSignal(services);
  const machine = { ...machineInfo(), nats: services.natsKind, database: services.dbKind === 'postgres' ? 'DATABASE_URL (Postgres)' : 'PGlite (embedded)' };
  return { services, machine };
}

/** Ctrl-C or SIGTERM: close the services (databases, streams, a throwaway nats-server) before exiting. */
function cleanUpOnSignal(services: Services): void {
  let closing = false;
  const onSignal = () => {
    if (closing) process.exit(130);
    closing = true;
    log('interrupted: cleaning up (Ctrl-C again to quit at once)');
    void services.close().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(usage());
    return 0;
  }
  const quick = args.includes('--quick');
  const profile = args.includes('--no-profile') ? 'never' : args.includes('--profile') ? 'always' : 'missed';
  const names = args.filter((a) => !a.startsWith('--'));
  const against = args.find((a) => a.startsWith('--against='))?.slice('--against='.length);
  if (against !== undefined) return compare(against, quick);
  const unknown = names.filter((n) => n !== 'all' && !SCENARIOS.some((s) => s.name === n));
  if (unknown.length > 0) {
    console.error(`unknown scenario ${unknown.join(', ')}\n\n${usage()}`);
    return 2;
  }
  const selected = names.length === 0 || names.includes('all') ? SCENARIOS : SCENARIOS.filter((s) => names.includes(s.name));

  markQuick(quick);
  const started = new Date();
  const { services, machine } = await openServices();
  log(`peekd bench: ${selected.map((s) => s.name).join(', ')}${quick ? ' (quick)' : ''} on ${machine.cpu}, ${machine.cores} cores; NATS: ${machine.nats}; database: ${machine.database}`);

  const results: ScenarioResult[] = [];
  const failures: string[] = [];
  try {
    for (const s of selected) {
      const t0 = Date.now();
      log(`=== ${s.name}: ${s.summary}`);
      try {
        const result = await s.run({ services, quick, profile });
        const file = writeResult(result, { date: started.toISOString(), quick, machine, durationS: Math.round((Date.now() - t0) / 1000) });
        log(`=== ${s.name} done in ${Math.round((Date.now() - t0) / 1000)} s → ${file}`);
        results.push(result);
      } catch (err) {
        log(`=== ${s.name} FAILED: ${(err as Error).stack ?? err}`);
        failures.push(`${s.name}: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  } finally {
    await services.close();
  }

  const rows: Row[] = results.flatMap((r) => r.rows);
  const cores = results.map((r) => `- ${r.scenario}: server side ${r.cores.server}; load side ${r.cores.load}`);
  const notes = results.flatMap((r) => r.notes.map((n) => `- ${n.replace(/\n/g, '\n  ')}`));
  const missed = rows.filter((r) => r.met === false).map((r) => `${r.scenario} (${r.goal})`);
  const text = [
    `## peekd bench — ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC${quick ? ' (--quick: scaled-down sizes)' : ''}`,
    '',
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}. NATS: ${machine.nats}. Database: ${machine.database}.`,
    '',
    tableMarkdown(rows),
    '',
    `Cores per side (${coresReport(undefined, undefined).note}):`,
    ...cores,
    '',
    missed.length > 0 ? `Goals missed: ${missed.join(', ')}. Where the time goes:` : 'Every goal met. Notes:',
    ...notes,
    ...(failures.length > 0 ? ['', 'Scenarios that failed to run:', ...failures.map((f) => `- ${f}`)] : []),
    '',
  ].join('\n');
  console.log(text);
  if (!quick && results.length > 0) writeFileSync(join(RESULTS_DIR, 'latest.md'), text);
  return failures.length > 0 ? 1 : 0;
}

/** `--against=REF`: this checkout against another commit, both under load at once (bench/compare.ts). */
async function compare(ref: string, quick: boolean): Promise<number> {
  if (!ref) {
    console.error(`--against needs a git ref\n\n${usage()}`);
    return 2;
  }
  if (process.env.BENCH_FROM_SOURCES === '1') {
    // Both sides would load this checkout's src/: a comparison of the code with itself.
    console.error('--against compares two builds of dist/: unset BENCH_FROM_SOURCES');
    return 2;
  }
  let built: { sha: string; dist: string };
  try {
    built = buildRef(ref);
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
  markQuick(quick);
  const started = new Date();
  const { services, machine } = await openServices();
  let result: ScenarioResult;
  try {
    result = await runCompare({ services, quick, profile: 'never' }, ref, built);
  } finally {
    await services.close();
  }
  writeResult(result, { date: started.toISOString(), quick, machine });
  console.log(
    [
      `## peekd bench — ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC: this checkout against ${ref}${quick ? ' (--quick)' : ''}`,
      '',
      `Machine: ${machine.cpu}, ${machine.cores} cores. NATS: ${machine.nats}. Database: ${machine.database}.`,
      '',
      compareMarkdown(result),
      '',
    ].join('\n'),
  );
  return 0;
}

process.exitCode = await main();
