// Before `npm test`: the operator page's test drives a headless Chromium, and no browser
// download works from npm. When none is found (PEEKD_CHROMIUM or /usr/bin/chromium) and
// this is Debian or Ubuntu run as root, installs Debian's `chromium` package; otherwise says
// what to do. Never fails the run itself: without a browser that one test fails, loudly.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const wanted = process.env.PEEKD_CHROMIUM || '/usr/bin/chromium';
if (!existsSync(wanted)) {
  const apt = spawnSync('sh', ['-c', 'command -v apt-get'], { encoding: 'utf8' }).stdout.trim();
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!process.env.PEEKD_CHROMIUM && apt && root) {
    console.log("ensure-chromium: no Chromium at /usr/bin/chromium; installing Debian's chromium package (for the operator page test)");
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = () => spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], { stdio: ['ignore', 'ignore', 'inherit'], env }).status === 0;
    if (!install()) {
      spawnSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'], env });
      install();
    }
  }
  if (!existsSync(wanted)) {
    console.log(`ensure-chromium: no Chromium at ${wanted}; the operator page test will fail. Install it (Debian/Ubuntu: apt-get install chromium) or set PEEKD_CHROMIUM to a Chromium binary.`);
  }
}
