// How every bench process loads code (bin/bench.mjs and each child, bench/child.mjs): the
// bench's TypeScript through tsx, peekd itself from dist/ (bench/distHooks.mjs), built first
// if src/ changed since the last build (as `npm start` does).
import { register as registerHooks } from 'node:module';
import { register } from 'tsx/esm/api';
import { ensureBuilt } from '../scripts/build.mjs';

export function registerBenchLoaders() {
  register();
  if (process.env.BENCH_FROM_SOURCES === '1') return;
  if (!process.env.BENCH_PEEKD_DIST) ensureBuilt(); // another commit's build (bench/compare.ts)
  registerHooks('./distHooks.mjs', import.meta.url);
}
