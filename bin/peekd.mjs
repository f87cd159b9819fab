#!/usr/bin/env node
// Runs peekd's compiled JavaScript (dist/, built by `npm ci` or `npm run build`). In a
// checkout whose sources changed since the last build, builds it first.
import { ensureBuilt } from '../scripts/build.mjs';

// Password hashing (scrypt), DNS lookups and file I/O share libuv's threadpool (4 threads
// by default): give them room before anything uses it.
process.env.UV_THREADPOOL_SIZE ??= '16';

try {
  ensureBuilt();
} catch (err) {
  console.error(`peekd: ${err.message}`);
  process.exit(1);
}
await import('../dist/cli.js');
