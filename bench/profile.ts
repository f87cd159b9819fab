// Summarises a V8 .cpuprofile (what `node --cpu-prof` and the inspector write): where the
// process's time went, by package / peekd source file (self time), by function (self
// time), and peekd functions and packages by inclusive time.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { ROOT } from './harness.ts';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Share {
  name: string;
  pct: number;
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  /** Share of samples where the process waited (event loop idle: I/O, other processes). */
  idlePct: number;
  gcPct: number;
  /** Self time by package or peekd source file, % of wall time. */
  byCategory: Share[];
  /** Self time by function. */
  topFunctions: Share[];
  /** Inclusive time of peekd's own functions. */
  peekdInclusive: Share[];
  /** Inclusive time by package (a sample counts once per package on its stack). */
  packagesInclusive: Share[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function category(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (SPECIAL.has(functionName)) return functionName;
  if (!url) return '(native)';
  if (url.startsWith('node:')) return url.split('/')[0]!;
  const path = url.replace(/^file:\/\//, '');
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = path.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (!path.startsWith(ROOT)) return path;
  // peekd runs from dist/ (bench/distHooks.mjs): named by the source file it was compiled from.
  const rel = relative(ROOT, path);
  return rel.startsWith('dist/') && rel.endsWith('.js') ? `src/${rel.slice('dist/'.length, -'.js'.length)}.ts` : rel;
}

function frameName(frame: CallFrame): string {
  const cat = category(frame);
  if (SPECIAL.has(frame.functionName)) return frame.functionName;
  // A peekd function is named by its source file alone (dist/'s lines are not src/'s).
  return cat.startsWith('src/') ? `${frame.functionName || '(anonymous)'} ${cat}` : `${frame.functionName || '(anonymous)'} ${cat}:${frame.lineNumber + 1}`;
}

function top(map: Map<string, number>, total: number, n: number): Share[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, t]) => ({ name, pct: Math.round((1000 * t) / total) / 10 }));
}

export function summarizeProfile(file: string, n = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const c of node.children ?? []) parent.set(c, node.id);
  }
  const selfCat = new Map<string, number>();
  const selfFn = new Map<string, number>();
  const inclSrc = new Map<string, number>();
  const inclPkg = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let gc = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0;
    if (dt <= 0) continue;
    total += dt;
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    const f = node.callFrame;
    if (f.functionName === '(idle)') idle += dt;
    if (f.functionName === '(garbage collector)') gc += dt;
    selfCat.set(category(f), (selfCat.get(category(f)) ?? 0) + dt);
    selfFn.set(frameName(f), (selfFn.get(frameName(f)) ?? 0) + dt);
    const seenFn = new Set<string>();
    const seenPkg = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const fr = byId.get(id)!.callFrame;
      const cat = category(fr);
      if (cat.startsWith('src/')) seenFn.add(frameName(fr));
      if (!SPECIAL.has(cat) && cat !== '(native)') seenPkg.add(cat.startsWith('src/') ? 'peekd src/' : cat);
    }
    for (const k of seenFn) inclSrc.set(k, (inclSrc.get(k) ?? 0) + dt);
    for (const k of seenPkg) inclPkg.set(k, (inclPkg.get(k) ?? 0) + dt);
  }
  const pct = (x: number) => Math.round((1000 * x) / Math.max(total, 1)) / 10;
  return {
    file: relative(ROOT, file),
    wallMs: Math.round(total / 1000),
    idlePct: pct(idle),
    gcPct: pct(gc),
    byCategory: top(selfCat, total, n),
    topFunctions: top(selfFn, total, n),
    peekdInclusive: top(inclSrc, total, n),
    packagesInclusive: top(inclPkg, total, n),
  };
}

const list = (s: Share[], k: number) =>
  s
    .slice(0, k)
    .map((x) => `${x.name} ${x.pct}%`)
    .join('; ');

/** A few lines for the closing note. */
export function describeProfile(label: string, s: ProfileSummary): string {
  return [
    `${label} — CPU profile of ${s.wallMs} ms (${s.file}): idle (waiting on I/O: NATS, Postgres, sockets) ${s.idlePct}%, GC ${s.gcPct}%.`,
    `  self time by package/file: ${list(s.byCategory, 8)}`,
    `  hottest functions (self): ${list(s.topFunctions, 8)}`,
    `  inclusive, packages: ${list(s.packagesInclusive, 8)}`,
    `  inclusive, peekd functions: ${list(s.peekdInclusive, 8)}`,
  ].join('\n');
}

/** Keeps the profiles out of git (they are large and machine-specific). */
export function ignoreProfiles(file: string): void {
  const ignore = join(dirname(file), '.gitignore');
  if (!existsSync(ignore)) writeFileSync(ignore, '*\n');
}

/** Runs `fn` while `child` profiles itself; returns fn's result and the profile's summary. */
export async function profiled<T>(child: { call<R>(op: string, args?: unknown, timeoutMs?: number): Promise<R> }, file: string, fn: () => Promise<T>): Promise<{ result: T; summary: ProfileSummary }> {
  ignoreProfiles(file);
  await child.call('profileStart', { intervalUs: 500 });
  let result: T;
  try {
    result = await fn();
  } finally {
    await child.call('profileStop', { file });
  }
  return { result, summary: summarizeProfile(file) };
}
