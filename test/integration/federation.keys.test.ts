// This server's identity as operators and peers see it: the ed25519 key file (generated on
// first start or by `peekd keys generate`, kept, never logged), GET /_matrix/key/v2/server
// (self-signed, valid_until_ts, old_verify_keys after a rotation — and a peer that still
// verifies events signed with the retired key), GET /_matrix/federation/v1/version, and
// server discovery (the configured map, then .well-known, then port 8448).
import { execFile } from 'node:child_process';
import { readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64, loadOrCreateSigningKeyFile, parseSigningKeyFile, verifyJsonSignature, encodeBase64Unpadded } from '../../src/crypto/index.ts';
import { rotateSigningKey } from '../../src/federation/ownKeys.ts';
import { ServerResolver } from '../../src/federation/resolver.ts';
import { PEEKD_VERSION } from '../../src/http/federation/routes.ts';
import { outboundPeeks, startFederation, startLoggedPeekd, SyncFollower, type Federation, type FedServer } from '../helpers/federation.ts';
import { request, TestUser } from '../helpers/matrix.ts';
import { tempDir } from '../helpers/services.ts';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/peekd.mjs', import.meta.url));

async function keyResponse(url: string) {
  const r = await request(url, 'GET', '/_matrix/key/v2/server');
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  return r.body;
}

/** Checks the response's self-signature with every current key; returns the key IDs. */
function checkSelfSigned(body: any, serverName: string): string[] {
  expect(body.server_name).toBe(serverName);
  const ids = Object.keys(body.verify_keys);
  expect(ids.length).toBeGreaterThan(0);
  for (const id of ids) {
    expect(id).toMatch(/^ed25519:[a-zA-Z0-9_]+$/);
    expect(verifyJsonSignature(body, serverName, id, decodeBase64(body.verify_keys[id].key))).toBe(true);
  }
  expect(body.valid_until_ts).toBeGreaterThan(Date.now());
  expect(body.valid_until_ts).toBeLessThanOrEqual(Date.now() + 7 * 86_400_000);
  return ids;
}

// Two peekd starts and a refused request whose key fetch must fail (DNS, on a threadpool
// that scrypt and PGlite share): generous on a loaded machine.
describe('the signing key file', { timeout: 180_000 }, () => {
  it('is generated on first start (mode 0600), served, kept across a restart, and never logged', async () => {
    const hs = await startLoggedPeekd();
    try {
      const path = join(hs.dataDir, 'signing.key');
      expect(existsSync(path)).toBe(true);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const text = readFileSync(path, 'utf8');
      const key = parseSigningKeyFile(text);
      const seed = text.trim().split(/\s+/)[2]!;

      const body = await keyResponse(hs.peekd.url!);
      expect(checkSelfSigned(body, hs.name)).toEqual([key.keyId]);
      expect(body.verify_keys[key.keyId].key).toBe(encodeBase64Unpadded(key.publicKey));
      expect(body.old_verify_keys).toEqual({});
      expect(await request(hs.peekd.url!, 'GET', `/_matrix/key/v2/server/${encodeURIComponent(key.keyId)}`)).toMatchObject({ status: 200, body: { server_name: hs.name } });

      // Some traffic that touches secrets: a registration, a refused federation request.
      await TestUser.register(hs.peekd.url!, 'keyholder');
      await request(hs.peekd.url!, 'PUT', '/_matrix/federation/v1/peek/!x:elsewhere/abc?ver=10', { body: {}, headers: { authorization: 'X-Matrix origin="elsewhere",key="ed25519:a",sig="AAAA"' } });

      expect(hs.lines.some((l) => l.includes('generated a new signing key') && l.includes(key.keyId))).toBe(true);
      await hs.restart();
      const again = await keyResponse(hs.peekd.url!);
      expect(Object.keys(again.verify_keys)).toEqual([key.keyId]);
      expect(readFileSync(path, 'utf8')).toBe(text);
      expect(hs.lines.filter((l) => l.includes('generated a new signing key'))).toHaveLength(1);

      const all = hs.lines.join('\n');
      expect(all.length).toBeGreaterThan(0);
      expect(all).not.toContain(seed);
      expect(all).not.toContain(Buffer.from(decodeBase64(seed)).toString('hex'));
    } finally {
      await hs.cleanup();
    }
  });

  it('`peekd keys generate` writes the key file once, then keeps it, printing no secret', async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, 'keys', 'signing.key');
      const env = { ...process.env, PEEKD_DATA_DIR: dir.path, PEEKD_SIGNING_KEY: path, PEEKD_LOG_LEVEL: 'silent' };
      const first = await run(process.execPath, [BIN, 'keys', 'generate'], { env, timeout: 30_000 });
      const text = readFileSync(path, 'utf8');
      const key = parseSigningKeyFile(text);
      expect(first.stdout).toContain(`generated ${key.keyId}`);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const second = await run(process.execPath, [BIN, 'keys', 'generate'], { env, timeout: 30_000 });
      expect(second.stdout).toContain(`kept existing ${key.keyId}`);
      expect(readFileSync(path, 'utf8')).toBe(text);
      const seed = text.trim().split(/\s+/)[2]!;
      expect(first.stdout + first.stderr + second.stdout + second.stderr).not.toContain(seed);
      // The server then starts with that key.
      expect((await loadOrCreateSigningKeyFile(path)).created).toBe(false);
    } finally {
      dir.remove();
    }
  });
});

describe('key rotation and the version endpoint', () => {
  let fed: Federation;
  let A: FedServer;
  let B: FedServer;

  beforeAll(async () => {
    fed = await startFederation({ servers: 2 });
    [A, B] = fed.servers as [FedServer, FedServer];
  });
  afterAll(async () => {
    await fed?.cleanup();
  });

  it('answers GET /_matrix/federation/v1/version without authentication', async () => {
    const r = await request(A.url, 'GET', '/_matrix/federation/v1/version');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.body).toEqual({ server: { name: 'peekd', version: PEEKD_VERSION } });
  });

  it('after a rotation and restart: serves the new key, lists the old one under old_verify_keys, and peers still verify old events', async () => {
    const alice = await TestUser.register(A.url, 'alice');
    const warm = await alice.createWorldReadableRoom({ room_alias_name: 'warm' });
    const old = await alice.createWorldReadableRoom({ room_alias_name: 'old' });
    const oldMsg = await alice.send(old.room_id, 'signed with the old key');
    await alice.send(warm.room_id, 'before');

    // B peeks one room now, so it has A's (old) keys cached.
    const bob = await TestUser.register(B.url, 'bob');
    const f = new SyncFollower(bob, 1_000);
    await f.once(0);
    expect((await bob.peek(`#warm:${A.name}`)).status).toBe(200);
    await f.until('the warm room', () => f.messages(warm.room_id).includes('before'));

    const before = await keyResponse(A.url);
    const [oldId] = checkSelfSigned(before, A.name);
    await A.stop();
    const path = join(A.dataDir, 'signing.key');
    const current = (await loadOrCreateSigningKeyFile(path)).key;
    expect(current.keyId).toBe(oldId);
    const rotatedAt = Date.now();
    const next = await rotateSigningKey(path, current, rotatedAt);
    await A.start();

    const after = await keyResponse(A.url);
    expect(checkSelfSigned(after, A.name)).toEqual([next.keyId]);
    expect(next.keyId).not.toBe(oldId);
    expect(after.old_verify_keys).toEqual({ [oldId!]: { key: before.verify_keys[oldId!].key, expired_ts: rotatedAt } });

    // New events are signed with the new key; B (whose cache holds only the old key)
    // looks again and accepts them.
    await alice.send(warm.room_id, 'after');
    await f.until('a message signed with the new key', () => f.messages(warm.room_id).includes('after'), 15_000);
    // A fresh peek of a room whose events predate the rotation: verified by old_verify_keys.
    expect((await bob.peek(`#old:${A.name}`)).status).toBe(200);
    await f.until('the old room', () => f.messages(old.room_id).includes('signed with the old key'));
    expect(f.eventIds(old.room_id)).toContain(oldMsg);
    expect(await outboundPeeks(B, old.room_id)).toHaveLength(1);
  });
});

describe('server discovery', () => {
  function stubFetch(answers: Record<string, unknown>) {
    const calls: string[] = [];
    const impl = (async (input: string | URL | Request) => {
      const url = String(input);
      calls.push(url);
      if (url in answers) return new Response(JSON.stringify(answers[url]), { status: 200, headers: { 'content-type': 'application/json' } });
      return new Response('{}', { status: 404 });
    }) as typeof fetch;
    return { calls, impl };
  }

  it('uses the configured map first, without asking .well-known', async () => {
    const { calls, impl } = stubFetch({ 'https://mapped.test/.well-known/matrix/server': { 'm.server': 'elsewhere.test:443' } });
    const r = new ServerResolver({ 'mapped.test': 'http://127.0.0.1:9999/' }, Date.now, impl);
    expect(await r.baseUrl('mapped.test')).toBe('http://127.0.0.1:9999');
    expect(calls).toEqual([]);
  });

  it('then /.well-known/matrix/server (with or without a port), cached', async () => {
    const { calls, impl } = stubFetch({
      'https://delegating.test/.well-known/matrix/server': { 'm.server': 'matrix.delegating.test:4443' },
      'https://noport.test/.well-known/matrix/server': { 'm.server': 'matrix.noport.test' },
    });
    const r = new ServerResolver({}, Date.now, impl);
    expect(await r.baseUrl('delegating.test')).toBe('https://matrix.delegating.test:4443');
    expect(await r.baseUrl('noport.test')).toBe('https://matrix.noport.test:8448');
    expect(await r.baseUrl('delegating.test')).toBe('https://matrix.delegating.test:4443');
    expect(calls).toEqual(['https://delegating.test/.well-known/matrix/server', 'https://noport.test/.well-known/matrix/server']);
  });

  it('then https://<name>:8448; a name with a port or an IP literal is used as it is', async () => {
    const { calls, impl } = stubFetch({ 'https://bad.test/.well-known/matrix/server': { 'm.server': 'not a server name!' } });
    const r = new ServerResolver({}, Date.now, impl);
    expect(await r.baseUrl('plain.test')).toBe('https://plain.test:8448');
    expect(await r.baseUrl('bad.test')).toBe('https://bad.test:8448');
    expect(await r.baseUrl('ported.test:8009')).toBe('https://ported.test:8009');
    expect(await r.baseUrl('10.1.2.3')).toBe('https://10.1.2.3:8448');
    expect(await r.baseUrl('[::1]:8448')).toBe('https://[::1]:8448');
    expect(calls).toEqual(['https://plain.test/.well-known/matrix/server', 'https://bad.test/.well-known/matrix/server']);
    // A well-known that cannot be fetched at all falls through too.
    const throwing = new ServerResolver({}, Date.now, (async () => {
      throw new TypeError('fetch failed');
    }) as typeof fetch);
    expect(await throwing.baseUrl('down.test')).toBe('https://down.test:8448');
  });
});
