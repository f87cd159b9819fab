// Boots one of the bench's child processes: registers the bench's loaders (tsx for the
// bench, dist/ for peekd: bench/loadPeekd.mjs) and imports the TypeScript module named by
// the first argument (server, loadgen, peers).
import { registerBenchLoaders } from './loadPeekd.mjs';

registerBenchLoaders();
const name = process.argv[2];
if (!name || !/^[a-z]+$/.test(name)) throw new Error(`bench child: bad module name ${name}`);
await import(`./${name}.ts`);
