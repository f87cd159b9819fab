// Boots one of the bench's child processes: registers tsx (as bin/peekd.mjs does) and
// imports the TypeScript module named by the first argument (server, loadgen, peers).
import { register } from 'tsx/esm/api';

register();
const name = process.argv[2];
if (!name || !/^[a-z]+$/.test(name)) throw new Error(`bench child: bad module name ${name}`);
await import(`./${name}.ts`);
