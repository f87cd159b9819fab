#!/usr/bin/env node
// Gives every relative import in the TypeScript sources its file's full name (`./x.ts`,
// `./dir/index.ts`): Node's ES modules resolve only complete paths, and tsc rewrites
// `.ts` to `.js` as it compiles to dist/. `--check` lists imports that lack one (lint).
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const ROOTS = ['src', 'test', 'bench'];
const check = process.argv.includes('--check');
const SPEC = /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]*)\2/g;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return name === 'node_modules' ? [] : files(p);
    return /\.(ts|mts)$/.test(name) ? [p] : [];
  });
}

function complete(fromFile, spec) {
  if (/\.(ts|mts|js|mjs|cjs|json)$/.test(spec)) return spec;
  const base = resolve(dirname(fromFile), spec);
  if (existsSync(`${base}.ts`)) return `${spec}.ts`;
  if (existsSync(join(base, 'index.ts'))) return `${spec.replace(/\/$/, '')}/index.ts`;
  return spec;
}

// Files given on the command line, or every source file.
const given = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const all = given.length ? given : ROOTS.filter((r) => existsSync(r)).flatMap(files);
let missing = 0;
{
  for (const file of all) {
    const text = readFileSync(file, 'utf8');
    const out = text.replace(SPEC, (all, lead, quote, spec) => {
      const full = complete(file, spec);
      if (full === spec) return all;
      if (check) {
        missing++;
        console.error(`${file}: import '${spec}' needs its extension ('${full}')`);
      }
      return `${lead}${quote}${full}${quote}`;
    });
    if (!check && out !== text) writeFileSync(file, out);
  }
}
if (check && missing) process.exit(1);
