#!/usr/bin/env node
// `npm run bench`: runs the benchmark scenarios in bench/ (TypeScript, through tsx) against
// peekd's compiled dist/, as `npm start` runs it (bench/loadPeekd.mjs).
import { registerBenchLoaders } from '../bench/loadPeekd.mjs';

registerBenchLoaders();
await import('../bench/main.ts');
