// Outbound federation cannot be turned against peekd's own network (issue 10): a forged
// request naming a loopback origin makes peekd connect nowhere; a header without our
// name as destination is refused before any key fetch; key servers that redirect, send
// an endless or oversized answer, or trickle it out are cut off; a flood of made-up key
// IDs costs one refetch; and an operator's allow list (or destinations map) still reaches
// loopback. A is a real peekd; the "peers" are loopback listeners scripted per case.
import type { lookup as dnsLookup } from 'node:dns';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_IP_DENYLIST } from '../../src/config.ts';
import { encodeBase64Unpadded, generateSigningKey, signJson, type SigningKey } from '../../src/crypto/index.ts';
import { KeyRing } from '../../src/federation/keyRing.ts';
import { ServerResolver } from '../../src/federation/resolver.ts';
import { OutboundRequestError, SafeFetcher } from '../../src/federation/safeFetch.ts';
import { freePort } from '../../src/nats/freePorts.ts';
import { FakeServer, holdsFor, inboundPeeks, peekPath, startFederation, waitFor, type Federation, type FedServer } from '../helpers/federation.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';
import { uniqueName } from '../helpers/services.ts';

// --- loopback "peers" ---------------------------------------------------------------

/** A TCP listener that counts connections and drops them: reaching it at all is the failure. */
interface Trap {
  port: number;
  connections: number;
  close(): Promise<void>;
}

async function trap(): Promise<Trap> {
  const sockets = new Set<Socket>();
  const t = { port: 0, connections: 0 } as Trap;
  const server = createTcpServer((socket) => {
    t.connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.port = (server.address() as { port: number }).port;
  t.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return t;
}

/** An HTTP server answering with `handler`; counts requests and answers cut off before their end. */
interface Peer {
  port: number;
  url: string;
  requests: number;
  /** Responses whose connection closed before the whole answer was written. */
  cutOff: number;
  close(): Promise<void>;
}

async function peer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Peer> {
  const p = { requests: 0, cutOff: 0 } as Peer;
  const server = createHttpServer((req, res) => {
    p.requests++;
    res.on('close', () => {
      if (!res.writableFinished) p.cutOff++;
    });
    req.resume();
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  p.port = (server.address() as { port: number }).port;
  p.url = `http://127.0.0.1:${p.port}`;
  p.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return p;
}

/** A self-signed key response for `name`, as a real server serves it. */
function keyBody(name: string, key: SigningKey): Record<string, unknown> {
  return signJson({ server_name: name, verify_keys: { [key.keyId]: { key: encodeBase64Unpadded(key.publicKey) } }, old_verify_keys: {}, valid_until_ts: Date.now() + 86_400_000 }, name, key);
}

/** Writes `text` and then `padding` spaces in 64 KiB pieces, chunked (no Content-Length). */
function writeChunked(res: ServerResponse, text: string, padding: number): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.write(text);
  let left = padding;
  const more = () => {
    while (left > 0 && !res.destroyed) {
      const n = Math.min(left, 65_536);
      left -= n;
      if (!res.write(' '.repeat(n))) return void res.once('drain', more);
    }
    if (!res.destroyed) res.end();
  };
  more();
}

/** Writes spaces forever (until the client goes away); chunked unless `headers` say otherwise. */
function writeEndlessly(res: ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': 'application/json', ...headers });
  const piece = ' '.repeat(65_536);
  const more = () => {
    while (!res.destroyed) if (!res.write(piece)) return void res.once('drain', more);
  };
  res.write('{"server_name":');
  more();
}

/** Sends headers, then a byte every 200 ms, forever: never done, never idle. */
function trickle(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.write('{');
  const timer = setInterval(() => res.write(' '), 200);
  res.on('close', () => clearInterval(timer));
}

const KEY_CAP = 1024 * 1024;

// --- the setup --------------------------------------------------------------------------

const tag = uniqueName('').slice(0, 10);
const names = {
  trap: `trap-${tag}.test`,
  redirect: `redirect-${tag}.test`,
  under: `under-${tag}.test`,
  over: `over-${tag}.test`,
  endless: `endless-${tag}.test`,
  slow: `slow-${tag}.test`,
  flood: `flood-${tag}.test`,
};
const keys = { under: generateSigningKey(), over: generateSigningKey() };

let fed: Federation;
let A: FedServer;
let F: FakeServer;
let flood: FakeServer;
/** Loopback listener no test may make A reach (origins that are not configured). */
let loopTrap: Trap;
/** Listener behind the configured name `names.trap`: reached only if A fetches its keys. */
let namedTrap: Trap;
/** Where the redirecting key server points. */
let redirectTarget: Trap;
const peers: Record<'redirect' | 'under' | 'over' | 'endless' | 'slow', Peer> = {} as never;

beforeAll(async () => {
  loopTrap = await trap();
  namedTrap = await trap();
  redirectTarget = await trap();
  peers.redirect = await peer((_req, res) => {
    res.writeHead(302, { location: `http://127.0.0.1:${redirectTarget.port}/_matrix/key/v2/server` });
    res.end();
  });
  peers.under = await peer((_req, res) => writeChunked(res, JSON.stringify(keyBody(names.under, keys.under)), KEY_CAP - 100 * 1024));
  peers.over = await peer((_req, res) => writeChunked(res, JSON.stringify(keyBody(names.over, keys.over)), KEY_CAP + 100 * 1024));
  peers.endless = await peer((_req, res) => writeEndlessly(res));
  peers.slow = await peer((_req, res) => trickle(res));
  const floodPort = await freePort();
  const floodKnows: Record<string, string> = {};
  flood = await FakeServer.start({ name: names.flood, port: floodPort, url: `http://127.0.0.1:${floodPort}` }, floodKnows);
  fed = await startFederation({
    servers: 1,
    fakes: 1,
    extraDestinations: {
      [names.trap]: `http://127.0.0.1:${namedTrap.port}`,
      [names.redirect]: peers.redirect.url,
      [names.under]: peers.under.url,
      [names.over]: peers.over.url,
      [names.endless]: peers.endless.url,
      [names.slow]: peers.slow.url,
      [names.flood]: flood.url,
    },
  });
  [A] = fed.servers as [FedServer];
  [F] = fed.fakes as [FakeServer];
  Object.assign(floodKnows, fed.destinations);
});

afterAll(async () => {
  await fed?.cleanup();
  await Promise.allSettled([loopTrap, namedTrap, redirectTarget].map((t) => t?.close()));
  await Promise.allSettled(Object.values(peers).map((p) => p.close()));
  await flood?.close();
});

/** A request to A signed as `origin` with `key` (F only carries it: F's own name is not used). */
function sendAs(origin: string, key: SigningKey, method: string, uri: string, content?: unknown, authorization?: string) {
  return F.send(A.name, method, uri, content, { authorization: authorization ?? F.authorization(A.name, method, uri, content, key, origin) });
}

/** An authenticated GET whose answer, once past authentication, is 404 (an alias nobody has). */
const directoryUri = () => `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(`#nobody${uniqueName()}:${A.name}`)}`;

function expect401(r: { status: number; body: any }) {
  expect(r.status).toBe(401);
  expect(r.body.errcode).toBe('M_UNAUTHORIZED');
}

// --- a real peekd ---------------------------------------------------------------------

describe('a forged request naming a loopback origin', () => {
  it.each([
    ['an IPv4 literal', (port: number) => `127.0.0.1:${port}`],
    ['a name that resolves to loopback', (port: number) => `localhost:${port}`],
    ['an IPv4-mapped IPv6 literal', (port: number) => `[::ffff:127.0.0.1]:${port}`],
  ])('is refused with 401, and peekd never connects to the origin (%s)', async (_what, originOf) => {
    const origin = originOf(loopTrap.port);
    const roomId = `!r${uniqueName()}:${A.name}`;
    const uri = peekPath(roomId, 'ssrf');
    // Signed with a key the "origin" would have to serve: A has to look it up to check.
    const r = await sendAs(origin, generateSigningKey(), 'PUT', uri, {});
    expect401(r);
    await holdsFor('no connection reaches the loopback listener', () => loopTrap.connections === 0, 300);
    expect(await inboundPeeks(A, roomId)).toEqual([]);
  });

  it('is refused with 401 without a connection when not even signed', async () => {
    const origin = `127.0.0.1:${loopTrap.port}`;
    const uri = peekPath(`!r${uniqueName()}:${A.name}`, 'ssrf');
    const r = await sendAs(origin, F.key, 'PUT', uri, {}, `X-Matrix origin="${origin}",destination="${A.name}",key="ed25519:abc",sig="${'A'.repeat(86)}"`);
    expect401(r);
    await holdsFor('no connection reaches the loopback listener', () => loopTrap.connections === 0, 300);
  });
});

describe('a client naming servers peekd may not reach', () => {
  it('gets 502 saying only why each failed, never the address a name resolved to; peekd connects to none of them', async () => {
    const bob = await TestUser.register(A.url, `bob${uniqueName()}`);
    const roomId = `!r${uniqueName()}:elsewhere.invalid`;
    const r = await bob.peek(roomId, { servers: [`localhost:${loopTrap.port}`, `127.0.0.1:${loopTrap.port}`] });
    expect([r.status, r.body.errcode]).toEqual([502, 'M_UNKNOWN']);
    expect(r.body.error).toContain('not an address outbound federation may connect to');
    expect(r.body.error).not.toMatch(/resolves to|127\.0\.0\.1 is|::1/);
    expect(r.body.error).not.toMatch(/127\.0\.0\.1(?!:\d)/);
    await holdsFor('no connection reaches the loopback listener', () => loopTrap.connections === 0, 300);
  });
});

describe('the X-Matrix header is judged before any key fetch', () => {
  // The origin is configured (trusted): were its keys fetched, namedTrap would see it.
  const uri = () => peekPath(`!r${uniqueName()}:${A.name}`, 'dst');
  const key = generateSigningKey();

  it.each([
    ['an empty destination', (u: string) => F.authorization(A.name, 'PUT', u, {}, key, names.trap).replace(/destination="[^"]*"/, 'destination=""')],
    ['another server as destination', (u: string) => F.authorization(F.name, 'PUT', u, {}, key, names.trap)],
    ['our name in another case', (u: string) => F.authorization(A.name.toUpperCase(), 'PUT', u, {}, key, names.trap)],
    ['a key ID that is not ed25519', (u: string) => F.authorization(A.name, 'PUT', u, {}, key, names.trap).replace(/key="[^"]*"/, 'key="rsa:1"')],
    ['a sig that is not a signature', (u: string) => F.authorization(A.name, 'PUT', u, {}, key, names.trap).replace(/sig="[^"]*"/, 'sig="bm90IGEgc2ln"')],
  ])('%s: 401, and the origin is never contacted', async (_what, header) => {
    const u = uri();
    const r = await sendAs(names.trap, key, 'PUT', u, {}, header(u));
    expect401(r);
    await holdsFor('no key fetch reaches the origin', () => namedTrap.connections === 0, 300);
  });

  it('(the same origin with a well-formed header is looked up: the trap is live)', async () => {
    const r = await sendAs(names.trap, key, 'GET', directoryUri());
    expect401(r);
    await waitFor('A tries to fetch the keys', () => namedTrap.connections > 0, 5_000);
  });
});

describe('key servers that misbehave', () => {
  it('a redirect is not followed: the key fetch fails and the target gets no connection', async () => {
    const r = await sendAs(names.redirect, generateSigningKey(), 'GET', directoryUri());
    expect401(r);
    expect(peers.redirect.requests).toBe(1);
    await holdsFor('the redirect target is never contacted', () => redirectTarget.connections === 0, 500);
  });

  it('a key response under the cap is read, even chunked and padded', async () => {
    const r = await sendAs(names.under, keys.under, 'GET', directoryUri());
    expect([r.status, r.body.errcode]).toEqual([404, 'M_NOT_FOUND']); // authenticated: the alias is just unknown
  });

  it('a key response over the cap (chunked, no Content-Length) is refused', async () => {
    const r = await sendAs(names.over, keys.over, 'GET', directoryUri());
    expect401(r);
    expect(peers.over.requests).toBe(1);
  });

  it('an endless key response is cut off at the cap, long before the fetch would time out', async () => {
    const started = Date.now();
    const r = await sendAs(names.endless, generateSigningKey(), 'GET', directoryUri());
    expect401(r);
    expect(Date.now() - started).toBeLessThan(5_000);
    await waitFor('A hangs up on the endless answer', () => peers.endless.cutOff === 1, 5_000);
  });

  it('a key server that trickles its answer is given up on within the fetch timeout', async () => {
    const started = Date.now();
    const r = await sendAs(names.slow, generateSigningKey(), 'GET', directoryUri());
    expect401(r);
    const took = Date.now() - started;
    // KEY_FETCH_TIMEOUT_MS (10 s) bounds the whole answer, though a byte arrives every 200 ms.
    expect(took).toBeGreaterThanOrEqual(9_000);
    expect(took).toBeLessThan(14_000);
    await waitFor('A hangs up on the trickling answer', () => peers.slow.cutOff === 1, 5_000);
  });
});

describe('unknown key IDs', () => {
  it('a flood naming made-up key IDs of one origin costs at most one refetch', async () => {
    flood.keyFetches = 0;
    const burst = await Promise.all(Array.from({ length: 30 }, () => flood.send(A.name, 'GET', directoryUri(), undefined, { key: generateSigningKey() })));
    for (const r of burst) expect401(r);
    const more: { status: number; body: any }[] = [];
    for (let i = 0; i < 10; i++) more.push(await flood.send(A.name, 'GET', directoryUri(), undefined, { key: generateSigningKey() }));
    for (const r of more) expect401(r);
    // The first look, plus one refetch for an unknown key ID.
    expect(flood.keyFetches).toBeGreaterThanOrEqual(1);
    expect(flood.keyFetches).toBeLessThanOrEqual(2);
    // The origin's real key still works (cached; no fetch).
    const fetched = flood.keyFetches;
    const ok = await flood.send(A.name, 'GET', directoryUri());
    expect([ok.status, ok.body.errcode]).toEqual([404, 'M_NOT_FOUND']);
    expect(flood.keyFetches).toBe(fetched);
  });

  it('refetches again once the throttle interval has passed (KeyRing with a clock)', async () => {
    let now = Date.now();
    const ring = new KeyRing(new ServerResolver({ [flood.name]: flood.url }, () => now), () => now, undefined, { refetchIntervalMs: 30_000 });
    flood.keyFetches = 0;
    for (let i = 0; i < 20; i++) expect(await ring.requestKey(flood.name, generateSigningKey().keyId)).toBeNull();
    expect(flood.keyFetches).toBe(2);
    for (let i = 0; i < 20; i++) expect(await ring.eventKey(flood.name, generateSigningKey().keyId, now, '10')).toBeNull();
    expect(flood.keyFetches).toBe(2);
    now += 30_000;
    expect(await ring.requestKey(flood.name, generateSigningKey().keyId)).toBeNull();
    expect(flood.keyFetches).toBe(3);
    expect(await ring.requestKey(flood.name, flood.key.keyId)).toEqual(flood.key.publicKey);
    expect(flood.keyFetches).toBe(3);
  });

  it("a key fetch is bounded by the KeyRing's timeout", async () => {
    const ring = new KeyRing(new ServerResolver({ [names.slow]: peers.slow.url }), Date.now, undefined, { fetchTimeoutMs: 500 });
    const started = Date.now();
    expect(await ring.requestKey(names.slow, 'ed25519:x')).toBeNull();
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});

describe('an allow list reaches loopback', () => {
  it('a peekd whose allow list covers 127.0.0.1 does connect to a loopback origin', async () => {
    const listener = await trap();
    const B = await startTestPeekd({ env: { PEEKD_FEDERATION_IP_ALLOWLIST: '127.0.0.1/32' } });
    try {
      const origin = `127.0.0.1:${listener.port}`;
      const uri = peekPath(`!r${uniqueName()}:${B.serverName}`, 'allow');
      // (F's destinations do not list B: the request goes out by hand.)
      const res = await fetch(B.url + uri, {
        method: 'PUT',
        headers: { authorization: F.authorization(B.serverName, 'PUT', uri, {}, generateSigningKey(), origin), 'content-type': 'application/json' },
        body: '{}',
      });
      // The listener is no key server (it drops the connection): still 401, but it was reached.
      expect(res.status).toBe(401);
      await waitFor('B connects to the allowed loopback origin', () => listener.connections > 0, 5_000);
    } finally {
      await B.dropAll();
      await listener.close();
    }
  });
});

// --- the fetcher itself -------------------------------------------------------------

describe('SafeFetcher', () => {
  let target: Peer;
  let hits: Trap;
  beforeAll(async () => {
    hits = await trap();
    target = await peer((req, res) => {
      const path = req.url ?? '/';
      const redirect = path.match(/^\/redirect\/(\d{3})$/);
      if (redirect) {
        res.writeHead(Number(redirect[1]), { location: `http://127.0.0.1:${hits.port}/` });
        return void res.end();
      }
      if (path === '/declared-huge') {
        return void writeEndlessly(res, { 'content-length': String(64 * 1024 * 1024) });
      }
      if (path === '/exactly-1000') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('"');
        res.write('x'.repeat(998));
        return void res.end('"');
      }
      if (path === '/endless') return void writeEndlessly(res);
      if (path === '/trickle') return void trickle(res);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
  });
  afterAll(async () => {
    await target?.close();
    await hits?.close();
  });

  async function refusal(p: Promise<unknown>): Promise<OutboundRequestError> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OutboundRequestError);
    return err as OutboundRequestError;
  }

  it('refuses denied addresses, literal or resolved, without connecting; the error names the destination and why', async () => {
    const f = new SafeFetcher();
    try {
      for (const host of ['127.0.0.1', '[::ffff:127.0.0.1]', 'localhost']) {
        const err = await refusal(f.fetch(`http://${host}:${hits.port}/_matrix/key/v2/server`, { destination: 'evil.test' }));
        expect(err.reason).toBe('denied-address');
        expect(err.message).toMatch(/^evil\.test: /);
        expect(err.message).toMatch(/may not connect/);
      }
      expect(hits.connections).toBe(0);
    } finally {
      await f.close();
    }
  });

  it('checks the address a name resolves to at connect time (a public-looking name pointing at loopback)', async () => {
    const lookup = ((_host: string, _opts: unknown, cb: (err: Error | null, addrs: { address: string; family: number }[]) => void) =>
      cb(null, [{ address: '127.0.0.1', family: 4 }])) as unknown as typeof dnsLookup;
    const denied = new SafeFetcher({ lookup });
    const allowed = new SafeFetcher({ lookup, ipAllowlist: ['127.0.0.1/32'] });
    try {
      const err = await refusal(denied.fetch(`http://matrix.example.org:${hits.port}/`, { destination: 'example.org' }));
      expect(err.reason).toBe('denied-address');
      expect(err.message).toContain('127.0.0.1');
      expect(hits.connections).toBe(0);
      const ok = await allowed.fetch(`http://matrix.example.org:${target.port}/`, { destination: 'example.org' });
      expect([ok.status, JSON.parse(ok.body.toString())]).toEqual([200, { ok: true }]);
    } finally {
      await Promise.all([denied.close(), allowed.close()]);
    }
  });

  it('refuses a name when any of its addresses is denied', async () => {
    const lookup = ((_host: string, _opts: unknown, cb: (err: Error | null, addrs: { address: string; family: number }[]) => void) =>
      cb(null, [
        { address: '127.0.0.1', family: 4 },
        { address: '10.0.0.1', family: 4 },
      ])) as unknown as typeof dnsLookup;
    const f = new SafeFetcher({ lookup, ipAllowlist: ['127.0.0.1/32'] });
    try {
      const err = await refusal(f.fetch(`http://mixed.example.org:${target.port}/`, { destination: 'mixed.example.org' }));
      expect(err.reason).toBe('denied-address');
      expect(err.message).toContain('10.0.0.1');
    } finally {
      await f.close();
    }
  });

  it('reaches loopback when the allow list says so, or when the destination is configured (trusted)', async () => {
    const allowed = new SafeFetcher({ ipAllowlist: ['127.0.0.0/8'] });
    const plain = new SafeFetcher({ ipDenylist: DEFAULT_IP_DENYLIST });
    try {
      expect((await allowed.fetch(`${target.url}/`, { destination: 'a.test' })).status).toBe(200);
      expect((await allowed.fetch(`http://localhost:${target.port}/`, { destination: 'a.test' })).status).toBe(200);
      expect((await plain.fetch(`${target.url}/`, { destination: 'a.test', trusted: true })).status).toBe(200);
      expect((await refusal(plain.fetch(`${target.url}/`, { destination: 'a.test' }))).reason).toBe('denied-address');
    } finally {
      await Promise.all([allowed.close(), plain.close()]);
    }
  });

  it.each([301, 302, 303, 307, 308])('never follows a %i', async (status) => {
    const f = new SafeFetcher();
    try {
      const err = await refusal(f.fetch(`${target.url}/redirect/${status}`, { destination: 'hop.test', trusted: true }));
      expect(err.reason).toBe('redirect');
      expect(err.message).toBe(`hop.test: answered ${status} (redirects are not followed)`);
      await holdsFor('the redirect target is never contacted', () => hits.connections === 0, 200, 50);
    } finally {
      await f.close();
    }
  });

  it('caps the body: an answer of exactly the cap is read, one byte less of cap is refused, an announced or endless excess is cut off', async () => {
    const f = new SafeFetcher({ maxResponseBytes: 1000 });
    try {
      expect((await f.fetch(`${target.url}/exactly-1000`, { destination: 'cap.test', trusted: true })).body.length).toBe(1000);
      const under = await refusal(f.fetch(`${target.url}/exactly-1000`, { destination: 'cap.test', trusted: true, maxResponseBytes: 999 }));
      expect(under.reason).toBe('too-large');
      const declared = await refusal(f.fetch(`${target.url}/declared-huge`, { destination: 'cap.test', trusted: true }));
      expect([declared.reason, declared.message]).toEqual(['too-large', `cap.test: announced a ${64 * 1024 * 1024}-byte answer, over the 1000-byte limit`]);
      const cutBefore = target.cutOff;
      const endless = await refusal(f.fetch(`${target.url}/endless`, { destination: 'cap.test', trusted: true, maxResponseBytes: 256 * 1024 }));
      expect(endless.reason).toBe('too-large');
      await waitFor('the endless answer is hung up on', () => target.cutOff >= cutBefore + 2, 5_000);
    } finally {
      await f.close();
    }
  });

  it('bounds the whole exchange: a default, and a per-call override', async () => {
    const f = new SafeFetcher({ timeoutMs: 600 });
    try {
      let started = Date.now();
      const byDefault = await refusal(f.fetch(`${target.url}/trickle`, { destination: 'slow.test', trusted: true }));
      expect([byDefault.reason, byDefault.message]).toEqual(['timeout', 'slow.test: no complete answer within 600 ms']);
      expect(Date.now() - started).toBeLessThan(3_000);
      started = Date.now();
      const override = await refusal(f.fetch(`${target.url}/trickle`, { destination: 'slow.test', trusted: true, timeoutMs: 150 }));
      expect(override.reason).toBe('timeout');
      expect(Date.now() - started).toBeLessThan(550);
      // A caller's own abort is told apart from the timeout.
      const ctl = new AbortController();
      const pending = f.fetch(`${target.url}/trickle`, { destination: 'slow.test', trusted: true, signal: ctl.signal });
      ctl.abort();
      expect((await refusal(pending)).reason).toBe('aborted');
    } finally {
      await f.close();
    }
  });
});
