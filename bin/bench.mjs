#!/usr/bin/env node
// `npm run bench`: runs the benchmark scenarios in bench/ from the TypeScript sources (tsx).
import { register } from 'tsx/esm/api';

register();
await import('../bench/main.ts');
