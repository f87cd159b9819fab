// Before `npm test`: two tests need programs npm cannot bring. The operator page's test
// drives a headless Chromium (no browser download works from npm), and the signing oracle
// test checks every key, signature and hash peekd makes with matrix.org's own Python
// libraries (signedjson, canonicaljson). When one is missing and this is Debian or Ubuntu
// run as root, installs Debian's package; otherwise says what to do. Never fails the run
// itself: without the tool, the one test that needs it fails, loudly.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const apt = spawnSync('sh', ['-c', 'command -v apt-get'], { encoding: 'utf8' }).stdout.trim();
const root = typeof process.getuid === 'function' && process.getuid() === 0;
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };

/** Installs Debian packages (refreshing the package lists once if the first try fails). */
function aptInstall(packages) {
  const install = () => spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: ['ignore', 'ignore', 'inherit'], env }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    install();
  }
}

// Chromium, for test/integration/adminPage.test.ts.
const chromium = process.env.PEEKD_CHROMIUM || '/usr/bin/chromium';
if (!existsSync(chromium)) {
  if (!process.env.PEEKD_CHROMIUM && apt && root) {
    console.log("ensure-test-tools: no Chromium at /usr/bin/chromium; installing Debian's chromium package (for the operator page test)");
    aptInstall(['chromium']);
  }
  if (!existsSync(chromium)) {
    console.log(`ensure-test-tools: no Chromium at ${chromium}; the operator page test will fail. Install it (Debian/Ubuntu: apt-get install chromium) or set PEEKD_CHROMIUM to a Chromium binary.`);
  }
}

// matrix.org's signing libraries, for test/integration/signing.oracle.test.ts.
const python = process.env.PEEKD_ORACLE_PYTHON || '/usr/bin/python3';
const hasOracle = () => spawnSync(python, ['-c', 'import signedjson.sign, canonicaljson'], { stdio: 'ignore' }).status === 0;
if (!hasOracle()) {
  if (!process.env.PEEKD_ORACLE_PYTHON && apt && root) {
    console.log("ensure-test-tools: matrix.org's signedjson and canonicaljson are missing; installing Debian's python3-signedjson and python3-canonicaljson (for the signing oracle test)");
    aptInstall(['python3-signedjson', 'python3-canonicaljson']);
  }
  if (!hasOracle()) {
    console.log(
      `ensure-test-tools: ${python} cannot import signedjson and canonicaljson; the signing oracle test will fail. Install them (Debian/Ubuntu: apt-get install python3-signedjson python3-canonicaljson) or set PEEKD_ORACLE_PYTHON to a Python 3 that has them.`,
    );
  }
}
