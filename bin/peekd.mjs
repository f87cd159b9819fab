#!/usr/bin/env node
// Runs peekd's TypeScript sources directly (tsx), so a checkout needs no build step.
import { register } from 'tsx/esm/api';

// Password hashing (scrypt), DNS lookups and file I/O share libuv's threadpool (4 threads
// by default): give them room before anything uses it.
process.env.UV_THREADPOOL_SIZE ??= '16';

register();
await import('../src/cli.ts');
