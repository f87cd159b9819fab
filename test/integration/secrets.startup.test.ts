// What an operator sees when peekd cannot start, and what other local users can see of its
// data directory: `node bin/peekd.mjs serve` in a child process, as operators run it.
// A start refused for a bad setting says which setting in one line, and no part of a
// secret (a DATABASE_URL password, the admin token) reaches stdout or stderr; the data
// directory and the embedded stores in it are open to peekd's user only.
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { freePort, spawnTied } from '../helpers/natsCluster.ts';
import { cleanEnv, REPO_ROOT } from '../helpers/npmStart.ts';
import { startPeekdProcess } from '../helpers/peekdProcess.ts';
import { tempDir } from '../helpers/services.ts';

const BIN = join(REPO_ROOT, 'bin/peekd.mjs');

interface Run {
  code: number | null;
  output: string;
  stderrLines: string[];
}

let dir: ReturnType<typeof tempDir>;
beforeEach(() => {
  dir = tempDir('peekd-secrets-');
});
afterEach(() => dir.remove());

/** `peekd …args` from the temp dir, with only `env` set of peekd's settings (no NATS_URL: a nats-server of its own). */
function peekd(env: Record<string, string>, ...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawnTied(process.execPath, [BIN, ...args], {
      cwd: dir.path,
      env: cleanEnv({ PEEKD_DATA_DIR: join(dir.path, 'data'), PEEKD_LISTEN: '127.0.0.1:0', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      // bin/peekd.mjs rebuilds dist/ first in a checkout whose sources changed, and says so.
      const stderrLines = stderr.split('\n').filter((l) => l !== '' && !l.startsWith('peekd: building dist/'));
      resolve({ code, output: stdout + stderr, stderrLines });
    });
  });
}

/** No run of 5 characters of `secret` appears in `text`. */
function expectNoPartOf(secret: string, text: string): void {
  for (let i = 0; i + 5 <= secret.length; i++) expect(text, `shows ${JSON.stringify(secret.slice(i, i + 5))}`).not.toContain(secret.slice(i, i + 5));
}

const ESCAPE_HINT = 'percent-encode special characters in the user name and password (# as %23, @ as %40, / as %2F, ? as %3F, : as %3A, % as %25)';

describe('a start refused for a bad setting', { timeout: 60_000 }, () => {
  it('a DATABASE_URL whose password holds an unescaped # is refused naming the variable and the fix, its password shown nowhere', async () => {
    const password = 'Wq7xs3cr#tVb9Lk2';
    const r = await peekd({ DATABASE_URL: `postgres://peekd:${password}@db.example/peekd` }, 'serve');
    expect(r.code).toBe(1);
    expect(r.stderrLines).toEqual([`peekd: DATABASE_URL holds a #, which ends a URL (its value is not shown: it may hold a password): ${ESCAPE_HINT}`]);
    expectNoPartOf(password, r.output);
    expect(r.output).not.toContain('db.example');
  });

  it('a DATABASE_URL the URL parser refuses, or with a broken %-escape, is named without its password', async () => {
    for (const [password, message] of [
      ['Wq7x?s3crVb9Lk2', `peekd: DATABASE_URL is not a valid URL (its value is not shown: it may hold a password): ${ESCAPE_HINT}`],
      ['Wq7x%zzs3crVb9L', `peekd: DATABASE_URL holds a % that starts no valid escape: ${ESCAPE_HINT}`],
    ] as const) {
      const r = await peekd({ DATABASE_URL: `postgres://peekd:${password}@db.example/peekd` }, 'serve');
      expect(r.code).toBe(1);
      expect(r.stderrLines).toEqual([message]);
      expectNoPartOf(password, r.output);
    }
  });

  it('a malformed config file holding the admin token is named with the place of the error, and no part of the token shown', async () => {
    const token = 'adm1nT0kenZqX7vRp4Hs';
    const file = join(dir.path, 'peekd.json');
    writeFileSync(file, `{\n  "PEEKD_SERVER_NAME": "a.example",\n  "PEEKD_ADMIN_TOKEN": ${token}\n}\n`, { mode: 0o600 });
    for (const args of [
      ['--config', file, 'serve'],
      ['--config', file, 'keys', 'rotate'],
    ]) {
      const r = await peekd({}, ...args);
      expect(r.code).toBe(1);
      expect(r.stderrLines).toEqual([`peekd: config file ${file} is not valid JSON: syntax error at line 3, column 24`]);
      expectNoPartOf(token, r.output);
    }
    // Nothing was started or written.
    expect(readdirSync(dir.path)).toEqual(['peekd.json']);
  });

  it('a NATS_URL whose password the URL parser refuses is named without its password', async () => {
    const password = 'Nq7x?s3cr#tVb9Lk';
    const r = await peekd({ NATS_URL: `nats://peekd:${password}@127.0.0.1:4222` }, 'serve');
    expect(r.code).toBe(1);
    expect(r.stderrLines).toEqual([`peekd: NATS_URL is not a valid URL (its value is not shown: it may hold a password): ${ESCAPE_HINT}`]);
    expectNoPartOf(password, r.output);
  });

  it('any other error that stops the start is one line, its name and message, without the properties it carries', async () => {
    // The NATS client refuses this address with Node's ERR_INVALID_URL, whose `input` is the URL.
    const r = await peekd({ NATS_URL: 'nats://[nats.example' }, 'serve');
    expect(r.code).toBe(1);
    expect(r.stderrLines).toEqual(['peekd: TypeError: Invalid URL (ERR_INVALID_URL)']);
    expect(r.output).not.toContain('nats.example');
  });
});

describe('the data directory', { timeout: 120_000 }, () => {
  const mode = (path: string) => statSync(path).mode & 0o777;

  /** `peekd serve` on the embedded database and a nats-server of its own, until it answers; then stopped. */
  async function serveOnce(dataDir: string): Promise<void> {
    const p = await startPeekdProcess({
      name: 'secrets-datadir',
      env: { PEEKD_DATA_DIR: dataDir, PEEKD_LISTEN: `127.0.0.1:${await freePort()}`, DATABASE_URL: '', NATS_URL: '', PEEKD_STREAM_PREFIX: '', PEEKD_SHARDS: '4' },
    });
    expect(await p.stop()).toBe(0);
  }

  it('made on first start, it and the embedded stores in it are open to peekd’s user only', async () => {
    const dataDir = join(dir.path, 'fresh', 'data');
    await serveOnce(dataDir);
    // PGlite writes its files (the WAL: password and access-token hashes) 0666 whatever the umask.
    expect(readdirSync(join(dataDir, 'pglite')).length).toBeGreaterThan(0);
    for (const d of [join(dir.path, 'fresh'), dataDir, join(dataDir, 'pglite'), join(dataDir, 'nats')]) expect(mode(d), d).toBe(0o700);
    expect(mode(join(dataDir, 'signing.key'))).toBe(0o600);
  });

  it('one an earlier peekd made under the umask (0755) is closed to others on the next start; one holding the operator’s files keeps its mode', async () => {
    const dataDir = join(dir.path, 'data');
    await serveOnce(dataDir);
    for (const d of [dataDir, join(dataDir, 'pglite'), join(dataDir, 'nats')]) chmodSync(d, 0o755);
    await serveOnce(dataDir);
    for (const d of [dataDir, join(dataDir, 'pglite'), join(dataDir, 'nats')]) expect(mode(d), d).toBe(0o700);

    // The operator keeps a file of theirs here and opened the directory to a group: theirs to choose.
    writeFileSync(join(dataDir, 'README.operator'), 'backups: nightly\n');
    chmodSync(dataDir, 0o750);
    chmodSync(join(dataDir, 'pglite'), 0o750);
    await serveOnce(dataDir);
    expect(mode(dataDir)).toBe(0o750);
    expect(mode(join(dataDir, 'pglite'))).toBe(0o700);
  });

  it('an empty directory the operator made for it, owned by peekd’s user, is closed to others', async () => {
    const dataDir = join(dir.path, 'var-lib-peekd');
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    await serveOnce(dataDir);
    expect(mode(dataDir)).toBe(0o700);
    expect(mode(join(dataDir, 'pglite'))).toBe(0o700);
  });
});
