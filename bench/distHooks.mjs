// Module resolve hook of the bench's processes: peekd's own modules (src/**/*.ts) load from
// the compiled dist/**/*.js, which is what `npm start` runs, rather than through tsx (whose
// esbuild transform keeps function names with a `__name` call per function created: 1–3.5 %
// of peekd's CPU in the bench's profiles). The bench's own modules still load through tsx.
// BENCH_FROM_SOURCES=1 turns this off (profiles then point at src/ lines directly).
import { pathToFileURL } from 'node:url';

const SRC = new URL('../src/', import.meta.url).href;
// BENCH_PEEKD_DIST: another build of peekd (`npm run bench -- --against=REF`, bench/compare.ts).
const DIST = process.env.BENCH_PEEKD_DIST ? pathToFileURL(`${process.env.BENCH_PEEKD_DIST}/`).href : new URL('../dist/', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (context.parentURL && (specifier.startsWith('.') || specifier.startsWith('file:'))) {
    const url = new URL(specifier, context.parentURL).href;
    if (url.startsWith(SRC) && url.endsWith('.ts')) {
      return { url: DIST + url.slice(SRC.length, -'.ts'.length) + '.js', format: 'module', shortCircuit: true };
    }
  }
  return nextResolve(specifier, context);
}
