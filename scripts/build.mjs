#!/usr/bin/env node
// Compiles src/ to dist/ with tsc (`npm run build`, run by `npm ci` through `prepare`).
// `ensureBuilt()` is what bin/peekd.mjs calls: in a checkout whose sources changed since
// the last build it builds first, so `npm start` always runs what is in src/. Builds are
// serialised across processes (several peekd processes may start at once).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
const STAMP = join(DIST, '.built');
const LOCK = join(ROOT, '.build.lock');

function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    t = Math.max(t, entry.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Whether dist/ is missing or older than a file of src/ or the build settings. */
export function stale() {
  if (!existsSync(STAMP)) return true;
  if (!existsSync(join(ROOT, 'src'))) return false; // an installed package: dist/ is all there is
  const sources = Math.max(newest(join(ROOT, 'src')), statSync(join(ROOT, 'tsconfig.json')).mtimeMs, statSync(join(ROOT, 'tsconfig.build.json')).mtimeMs);
  return sources > statSync(STAMP).mtimeMs;
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs tsc; its output goes to stderr (stdout belongs to the command being run). */
export function build() {
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  } catch {
    throw new Error('dist/ is out of date and TypeScript is not installed: run `npm ci` (it builds), or `npm run build`');
  }
  const started = Date.now();
  const res = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  if (res.status !== 0) throw new Error(`the build failed (tsc exited ${res.status ?? res.signal})`);
  mkdirSync(DIST, { recursive: true });
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
  return Date.now() - started;
}

/** Builds unless dist/ is up to date; one process builds while the others wait for it. */
export function ensureBuilt() {
  if (!stale()) return;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A build that died long ago leaves its lock behind: take it over.
      try {
        if (Date.now() - statSync(LOCK).mtimeMs > 120_000) rmSync(LOCK, { recursive: true, force: true });
      } catch {
        // gone meanwhile
      }
      sleep(100);
    }
  }
  try {
    if (stale()) {
      process.stderr.write('peekd: building dist/ from src/ ...\n');
      build();
    }
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const ms = build();
    process.stderr.write(`built dist/ in ${(ms / 1000).toFixed(1)} s\n`);
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
}
