// The operator commands behind `peekd replay`, `peekd verify` and `peekd audit`.
import type { Config } from '../config';
import { createLogger } from '../logger';
import { queryAudit, type AuditEntry, type AuditQuery } from '../projections/auditQuery';
import { replayProjection, selectReadModels, verifyProjection, type VerifyResult } from '../projections/rebuild';
import { openInfrastructure } from '../server';
import { progressReporter } from './progress';

/** Where a command writes its report (stdout; a buffer in tests). */
export interface Output {
  write(text: string): unknown;
}

export async function runReplay(config: Config, projection: string | undefined, out: Output = process.stdout): Promise<void> {
  const models = selectReadModels(projection);
  const infra = await openInfrastructure(config, createLogger('warn', 'peekd-replay'));
  try {
    for (const p of models) {
      const progress = progressReporter(`replay ${p.name}`);
      const r = await replayProjection({ db: infra.database.db, nc: infra.nc, naming: infra.naming }, p, (d, t) => progress.update(d, t));
      progress.stop();
      out.write(`replayed ${r.projection} up to sequence ${r.seq} in ${(r.durationMs / 1000).toFixed(1)} s; swapped in\n`);
    }
  } finally {
    await infra.close();
  }
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

/** Returns true when every verified projection equals its rebuild. */
export async function runVerify(config: Config, projection: string | undefined, out: Output = process.stdout): Promise<boolean> {
  const models = selectReadModels(projection);
  const infra = await openInfrastructure(config, createLogger('warn', 'peekd-verify'));
  let ok = true;
  try {
    for (const p of models) {
      const progress = progressReporter(`verify ${p.name}`);
      const r = await verifyProjection({ db: infra.database.db, nc: infra.nc, naming: infra.naming }, p, (d, t) => progress.update(d, t));
      progress.stop();
      out.write(`${formatVerify(r)}\n`);
      ok &&= r.equal;
    }
  } finally {
    await infra.close();
  }
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
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
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
