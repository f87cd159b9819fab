// `peekd keys rotate` writes the new signing key as the first start does: 0600 whatever was
// lying at a temp name beside it, never through a symlink, the file whole.
import { lstat, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeBase64Unpadded, formatSigningKeyFile, loadOrCreateSigningKeyFile } from '../../src/crypto/index.ts';
import { loadOldKeys, rotateSigningKey } from '../../src/federation/ownKeys.ts';

describe.skipIf(process.platform === 'win32')('rotating the signing key', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'peekd-rotate-'));
    path = join(dir, 'signing.key');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves the new key file 0600 when a world-readable signing.key.tmp was already there', async () => {
    const { key: current } = await loadOrCreateSigningKeyFile(path);
    // Left by an interrupted rotation of an earlier peekd, or made by someone else.
    await writeFile(join(dir, 'signing.key.tmp'), 'stale\n');
    await chmod(join(dir, 'signing.key.tmp'), 0o644);
    await writeFile(join(dir, 'signing.key.old.json.tmp'), '{}');
    await chmod(join(dir, 'signing.key.old.json.tmp'), 0o644);

    const next = await rotateSigningKey(path, current, 1_000);

    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toBe(formatSigningKeyFile(next));
    expect((await loadOrCreateSigningKeyFile(path)).key.keyId).toBe(next.keyId);
    expect((await stat(join(dir, 'signing.key.old.json'))).mode & 0o777).toBe(0o600);
    expect(await loadOldKeys(path)).toEqual([{ keyId: current.keyId, publicKey: encodeBase64Unpadded(current.publicKey), expiredTs: 1_000 }]);
  });

  it('never writes the new key through a symlink left at a temp name', async () => {
    const { key: current } = await loadOrCreateSigningKeyFile(path);
    const elsewhere = join(dir, 'elsewhere');
    await writeFile(elsewhere, '');
    await chmod(elsewhere, 0o644);
    await symlink(elsewhere, join(dir, 'signing.key.tmp'));

    const next = await rotateSigningKey(path, current, 1_000);

    expect(await readFile(elsewhere, 'utf8')).toBe('');
    const st = await lstat(path);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toBe(formatSigningKeyFile(next));
    // The rotation's own temp files are gone; what it found there it left alone.
    expect((await readdir(dir)).sort()).toEqual(['elsewhere', 'signing.key', 'signing.key.old.json', 'signing.key.tmp']);
  });
});
