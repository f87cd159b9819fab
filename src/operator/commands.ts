// The operator commands behind `peekd replay`, `peekd verify` and `peekd audit`.
import cliProgress from 'cli-progress';
import type { Config } from '../config.ts';
import { createLogger } from '../logger.ts';
import { queryAudit, type AuditEntry, type AuditQuery } from '../projections/auditQuery.ts';
import type { Projection } from '../projections/projection.ts';
import { byStream, replayProjections, selectReadModels, verifyProjections, type Progress, type RebuildDeps, type VerifyResult } from '../projections/rebuild.ts';
import { openInfrastructure } from '../server.ts';
import { progressReporter, type ProgressReporter } from './progress.ts';

/** Where a command writes its report (stdout; a buffer in tests). */
export interface Output {
  write(text: string): unknown;
}

/**
 * One progress report per projection of a group rebuilt together (`${verb} ${name}`, as when
 * they were rebuilt one at a time): plain lines on a pipe; on a terminal, one bar each, drawn
 * together (bars of their own would overwrite each other's line).
 */
function groupProgress(verb: string, group: Projection<unknown>[], stream: NodeJS.WriteStream = process.stderr): { onProgress: Progress; stop(): void } {
  let reporters: Map<string, ProgressReporter>;
  let multi: cliProgress.MultiBar | undefined;
  if (stream.isTTY && group.length > 1) {
    const started = Date.now();
    const bars = new cliProgress.MultiBar({ stream, hideCursor: true }, cliProgress.Presets.shades_classic);
    multi = bars;
    reporters = new Map(
      group.map((p) => {
        let bar: cliProgress.SingleBar | undefined;
        const reporter: ProgressReporter = {
          update(done, total) {
            const rate = Math.round(done / Math.max(0.001, (Date.now() - started) / 1000));
            bar ??= bars.create(Math.max(total, 1), done, { rate }, { format: `${verb} ${p.name} [{bar}] {percentage}% | {value}/{total} events | {rate} ev/s | ETA {eta_formatted}` });
            bar.setTotal(Math.max(total, 1));
            bar.update(done, { rate });
          },
          stop: () => undefined,
        };
        return [p.name, reporter];
      }),
    );
  } else {
    reporters = new Map(group.map((p) => [p.name, progressReporter(`${verb} ${p.name}`, stream)]));
  }
  return {
    onProgress: (done, total, name) => reporters.get(name)?.update(done, total),
    stop() {
      for (const r of reporters.values()) r.stop();
      multi?.stop();
    },
  };
}

/**
 * Runs `run` (replay or verify) on the read models `projection` selects, a stream at a time
 * (its projections from one read of it), with progress, and hands each result to `each`.
 */
async function perStream<R>(
  config: Config,
  projection: string | undefined,
  verb: 'replay' | 'verify',
  run: (deps: RebuildDeps, group: Projection<unknown>[], onProgress: Progress) => Promise<R[]>,
  each: (r: R) => void,
): Promise<void> {
  const models = selectReadModels(projection);
  const infra = await openInfrastructure(config, createLogger('warn', `peekd-${verb}`));
  try {
    for (const group of byStream(models)) {
      const progress = groupProgress(verb, group);
      let results: R[];
      try {
        results = await run({ db: infra.database.db, nc: infra.nc, naming: infra.naming }, group, progress.onProgress);
      } finally {
        progress.stop();
      }
      for (const r of results) each(r);
    }
  } finally {
    await infra.close();
  }
}

/** Replays the read models `projection` selects; those of one stream from one read of it. */
export async function runReplay(config: Config, projection: string | undefined, out: Output = process.stdout): Promise<void> {
  await perStream(config, projection, 'replay', replayProjections, (r) => out.write(`replayed ${r.projection} up to sequence ${r.seq} in ${(r.durationMs / 1000).toFixed(1)} s; swapped in\n`));
}

export function formatVerify(r: VerifyResult): string {
  const lines = [`${r.projection} at sequence ${r.seq}: ${r.equal ? 'OK' : 'DIFFERENT'}`];
  for (const t of r.tables) {
    lines.push(`  ${t.table}: live ${t.liveRows} rows ${t.liveHash}, rebuilt ${t.rebuiltRows} rows ${t.rebuiltHash}${t.equal ? '' : '  <-- differs'}`);
    for (const d of t.differences) lines.push(`    ${d.side === 'live' ? '- live   ' : '+ rebuilt'} ${d.row}`);
  }
  const q = r.quarantine;
  lines.push(`  projection_quarantine: live ${q.liveRows} rows, rebuilt ${q.rebuiltRows} rows${q.equal ? '' : '  <-- differs'}`);
  for (const d of q.differences) lines.push(`    ${d.side === 'live' ? '- live   ' : '+ rebuilt'} ${d.stream} seq ${d.streamSeq}`);
  return lines.join('\n');
}

/** Verifies the read models `projection` selects (those of one stream from one read of it); true when every one equals its rebuild. */
export async function runVerify(config: Config, projection: string | undefined, out: Output = process.stdout): Promise<boolean> {
  let ok = true;
  await perStream(config, projection, 'verify', verifyProjections, (r) => {
    out.write(`${formatVerify(r)}\n`);
    ok &&= r.equal;
  });
  return ok;
}

export function formatAuditTable(entries: AuditEntry[]): string {
  const head = ['seq', 'time', 'room', 'event', 'kind', 'who', 'reason', 'expires'];
  const rows = entries.map((e) => [
    String(e.seq),
    new Date(e.at).toISOString(),
    e.room_id,
    e.event,
    e.kind,
    e.kind === 'device' ? `${e.user_id ?? ''} ${e.device_id ?? ''}` : `${e.server_name ?? ''} ${e.peek_id ?? ''}`,
    e.reason ?? '',
    e.expires_at !== undefined ? new Date(e.expires_at).toISOString() : '',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

export async function runAudit(config: Config, query: AuditQuery, format: 'table' | 'jsonl', out: Output = process.stdout): Promise<number> {
  const infra = await openInfrastructure(config, createLogger('warn', 'peekd-audit'));
  let count = 0;
  try {
    let q = query;
    const all: AuditEntry[] = [];
    for (;;) {
      const page = await queryAudit(infra.database.db, q);
      count += page.events.length;
      if (format === 'jsonl') for (const e of page.events) out.write(`${JSON.stringify(e)}\n`);
      else all.push(...page.events);
      if (!page.next_batch) break;
      q = { ...q, after: Number(page.next_batch) };
    }
    if (format === 'table') out.write(`${formatAuditTable(all)}\n`);
  } finally {
    await infra.close();
  }
  return count;
}
