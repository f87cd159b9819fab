// Multi-server federation setups for tests: several real peekd instances on loopback, each
// with its own server name, port, database, stream prefix and data dir, that know each
// other through PEEKD_FEDERATION_DESTINATIONS; and "fake" remote servers made of our own
// crypto module and a tiny node:http server, for the cases a real peekd never produces
// (forged requests, a peer that is down, a peer that never renews, wire-level checks).
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { and, eq } from 'drizzle-orm';
import {
  canonicalJson,
  decodeBase64,
  encodeBase64Unpadded,
  eventIdForPdu,
  generateSigningKey,
  hashAndSignPdu,
  parseXMatrixHeader,
  signJson,
  signRequest,
  verifyJsonSignature,
  verifyRequestSignature,
  type SigningKey,
} from '../../src/crypto/index.ts';
import { freePort } from '../../src/nats/freePorts.ts';
import { federationsenderInboundPeeks, federationsenderOutboundPeeks, peekAudit, syncapiRoomEvents } from '../../src/store/schema.ts';
import type { Peekd } from '../../src/server.ts';
import { TestUser } from './matrix.ts';
import { startTestPeekd } from './peekd.ts';
import { createTestDatabase, tempDir, uniqueName, type TestDatabase } from './services.ts';

// --- polling ---------------------------------------------------------------------------

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false | null> | T | undefined | false | null, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false && v !== null) return v as T;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`waitFor: ${what} did not happen within ${timeoutMs} ms${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Asserts that `check` stays true for `forMs` (polled): "nothing happens" with a bound. */
export async function holdsFor(what: string, check: () => Promise<boolean> | boolean, forMs: number, intervalMs = 100): Promise<void> {
  const until = Date.now() + forMs;
  while (Date.now() < until) {
    if (!(await check())) throw new Error(`holdsFor: ${what} stopped holding`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// --- real peekd instances --------------------------------------------------------------

export interface FedServer {
  /** The Matrix server name. */
  name: string;
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** Its data directory (signing key file). */
  dataDir: string;
  /** The running instance (throws when stopped). */
  readonly peekd: Peekd;
  readonly running: boolean;
  /** Stops the instance as a crash would look to its peers (its stores stay). */
  stop(): Promise<void>;
  /** Starts it again on the same database, streams, data dir and port. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops it and removes its database, streams and data dir. */
  cleanup(): Promise<void>;
}

export interface FakePlan {
  name: string;
  port: number;
  url: string;
}

export interface Federation {
  servers: FedServer[];
  fakes: FakeServer[];
  destinations: Record<string, string>;
  cleanup(): Promise<void>;
}

export interface FederationOptions {
  /** How many peekd instances (named a, b, c, … plus a unique suffix). */
  servers: number;
  /** How many fake remote servers. */
  fakes?: number;
  /** Env for every instance. */
  env?: Record<string, string>;
  /** Env per instance, by index. */
  envOf?: (i: number) => Record<string, string>;
  /** Extra entries for every instance's destination map (e.g. names that must not resolve). */
  extraDestinations?: Record<string, string>;
}

/**
 * Starts `servers` peekd instances and `fakes` fake servers that all know each other.
 * Ports are picked free before anything listens (the destinations name them), so another
 * test file can take one in between: on EADDRINUSE everything starts again on new ports.
 */
export async function startFederation(options: FederationOptions): Promise<Federation> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startFederationOnce(options);
    } catch (err) {
      if (attempt >= 3 || !String((err as Error)?.message ?? err).includes('EADDRINUSE')) throw err;
    }
  }
}

async function startFederationOnce(options: FederationOptions): Promise<Federation> {
  const tag = uniqueName('').slice(0, 10);
  const letters = 'abcdefgh';
  const plans: { name: string; port: number }[] = [];
  for (let i = 0; i < options.servers; i++) plans.push({ name: `${letters[i]}-${tag}.test`, port: await freePort() });
  const fakePlans: FakePlan[] = [];
  for (let i = 0; i < (options.fakes ?? 0); i++) {
    const port = await freePort();
    fakePlans.push({ name: `fake${i}-${tag}.test`, port, url: `http://127.0.0.1:${port}` });
  }
  const destinations: Record<string, string> = { ...(options.extraDestinations ?? {}) };
  for (const p of plans) destinations[p.name] = `http://127.0.0.1:${p.port}`;
  for (const f of fakePlans) destinations[f.name] = f.url;

  const fakes: FakeServer[] = [];
  const servers: FedServer[] = [];
  const fed: Federation = {
    servers,
    fakes,
    destinations,
    cleanup: async () => {
      await Promise.allSettled(fakes.map((f) => f.close()));
      const results = await Promise.allSettled(servers.map((s) => s.cleanup()));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    },
  };
  try {
    for (const f of fakePlans) fakes.push(await FakeServer.start(f, destinations));
    for (const [i, p] of plans.entries()) {
      servers.push(
        await startFedServer(p.name, p.port, {
          PEEKD_FEDERATION_DESTINATIONS: JSON.stringify(destinations),
          ...(options.env ?? {}),
          ...(options.envOf?.(i) ?? {}),
        }),
      );
    }
  } catch (err) {
    await fed.cleanup().catch(() => undefined);
    throw err;
  }
  return fed;
}

async function startFedServer(name: string, port: number, env: Record<string, string>): Promise<FedServer> {
  const db: TestDatabase = await createTestDatabase();
  const dir = tempDir();
  const prefix = `${uniqueName()}_`;
  const reuse = { databaseUrl: db.url, prefix, dataDir: dir.path, port };
  let current: Awaited<ReturnType<typeof startTestPeekd>> | undefined;
  let removed = false;
  const start = async () => {
    if (current) return;
    current = await startTestPeekd({ serverName: name, env, reuse });
  };
  const stop = async () => {
    const c = current;
    current = undefined;
    if (c) await whileClosing(c.peekd, () => c.close());
  };
  await start();
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    dataDir: dir.path,
    get peekd() {
      if (!current) throw new Error(`${name} is not running`);
      return current.peekd;
    },
    get running() {
      return current !== undefined;
    },
    stop,
    start,
    restart: async () => {
      await stop();
      await start();
    },
    cleanup: async () => {
      if (removed) return;
      removed = true;
      // dropAll() deletes the streams; it needs a running instance to know their names.
      if (!current) await start();
      const c = current!;
      current = undefined;
      try {
        await whileClosing(c.peekd, () => c.dropAll());
      } finally {
        await db.drop();
        dir.remove();
      }
    },
  };
}

/**
 * Runs `close` while closing the instance's idle HTTP connections every 100 ms. A peer's
 * keep-alive connection that was busy when the server began closing and idles afterwards
 * would otherwise hold `app.close()` open for Fastify's keepAliveTimeout (72 s).
 */
async function whileClosing(p: Peekd, close: () => Promise<void>): Promise<void> {
  const server = p.http?.app.server;
  const timer = setInterval(() => server?.closeIdleConnections(), 100);
  try {
    await close();
  } finally {
    clearInterval(timer);
  }
}

// --- queries on a running instance -----------------------------------------------------

export async function inboundPeeks(s: FedServer, roomId?: string) {
  const t = federationsenderInboundPeeks;
  const q = s.peekd.database.db.select().from(t);
  return roomId ? q.where(eq(t.roomId, roomId)) : q;
}

export async function outboundPeeks(s: FedServer, roomId?: string) {
  const t = federationsenderOutboundPeeks;
  const q = s.peekd.database.db.select().from(t);
  return roomId ? q.where(eq(t.roomId, roomId)) : q;
}

/** PeekExpired audit rows of `kind` peeks of `roomId`, oldest first. */
export async function expiries(s: FedServer, roomId: string, kind: 'inbound' | 'outbound' | 'device') {
  const t = peekAudit;
  const rows = await s.peekd.database.db
    .select()
    .from(t)
    .where(and(eq(t.roomId, roomId), eq(t.kind, kind), eq(t.eventType, 'PeekExpired')));
  return rows.sort((a, b) => a.seq - b.seq);
}

/** `s`'s copy of a room: its event IDs in the order `s` holds them. */
export async function roomCopy(s: FedServer, roomId: string): Promise<string[]> {
  const rows = await s.peekd.database.db.select().from(syncapiRoomEvents).where(eq(syncapiRoomEvents.roomId, roomId));
  return rows.sort((a, b) => a.seq - b.seq).map((r) => r.eventId);
}

export async function auditRows(s: FedServer, roomId: string) {
  const rows = await s.peekd.database.db.select().from(peekAudit).where(eq(peekAudit.roomId, roomId));
  return rows.sort((a, b) => a.seq - b.seq);
}

// --- fake remote servers ---------------------------------------------------------------

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  uri: string;
  headers: IncomingMessage['headers'];
  /** Raw body text ('' for none). */
  text: string;
  body: any;
  /** The X-Matrix origin, when the request was signed by a server whose keys verified it. */
  verifiedOrigin?: string;
  at: number;
}

export interface FakeReply {
  status: number;
  body?: unknown;
}

/** Answers a recorded request; undefined = the default (200 `{}` or a /send result). */
export type FakeHandler = (req: RecordedRequest) => FakeReply | undefined | Promise<FakeReply | undefined>;

/**
 * A remote homeserver as far as a peer can tell: a server name, an ed25519 key served
 * self-signed at /_matrix/key/v2/server, signed requests to peers, and a record of what
 * peers send it (with their X-Matrix signatures checked against the peers' key servers).
 */
export class FakeServer {
  readonly requests: RecordedRequest[] = [];
  /** Answers requests other than the key endpoint; replace it to script the peer. */
  handler: FakeHandler = () => undefined;
  /** While true every request (keys included) is answered 503, as a peer that is down. */
  down = false;
  /** Requests answered 503 while down, by path. */
  readonly refused: { method: string; uri: string; body: any }[] = [];
  /** How many times the key endpoint was fetched. */
  keyFetches = 0;
  /** Overrides the key response (e.g. a bad self-signature). */
  keyResponse?: () => unknown;
  private readonly peerKeys = new Map<string, Map<string, Uint8Array>>();

  private constructor(
    readonly name: string,
    readonly url: string,
    readonly key: SigningKey,
    private readonly server: Server,
    private readonly destinations: Record<string, string>,
  ) {}

  static async start(plan: FakePlan, destinations: Record<string, string>, key: SigningKey = generateSigningKey()): Promise<FakeServer> {
    let self!: FakeServer;
    const server = createServer((req, res) => void self.serve(req, res));
    self = new FakeServer(plan.name, plan.url, key, server, destinations);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(plan.port, '127.0.0.1', () => resolve());
    });
    return self;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The self-signed key response a real server would serve. */
  keyBody(validUntilTs = Date.now() + 24 * 60 * 60_000, key: SigningKey = this.key): Record<string, unknown> {
    return signJson({ server_name: this.name, verify_keys: { [key.keyId]: { key: encodeBase64Unpadded(key.publicKey) } }, old_verify_keys: {}, valid_until_ts: validUntilTs }, this.name, key);
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const uri = req.url ?? '/';
    if (this.down) {
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        parsed = text;
      }
      this.refused.push({ method: req.method ?? 'GET', uri, body: parsed });
      return reply(503, { errcode: 'M_UNKNOWN', error: 'down' });
    }
    if (req.method === 'GET' && uri.split('?')[0]!.startsWith('/_matrix/key/v2/server')) {
      this.keyFetches++;
      return reply(200, this.keyResponse ? this.keyResponse() : this.keyBody());
    }
    let body: any;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      return reply(400, { errcode: 'M_NOT_JSON', error: 'not JSON' });
    }
    const recorded: RecordedRequest = { method: req.method ?? 'GET', uri, headers: req.headers, text, body, at: Date.now() };
    recorded.verifiedOrigin = await this.verify(recorded);
    this.requests.push(recorded);
    try {
      const r = await this.handler(recorded);
      if (r) return reply(r.status, r.body ?? {});
    } catch (err) {
      return reply(500, { errcode: 'M_UNKNOWN', error: (err as Error).message });
    }
    if (uri.startsWith('/_matrix/federation/v1/send/')) return reply(200, { pdus: {} });
    return reply(200, {});
  }

  /** Checks a request's X-Matrix header against the origin's published keys. */
  private async verify(r: RecordedRequest): Promise<string | undefined> {
    const header = r.headers.authorization;
    if (typeof header !== 'string') return undefined;
    const auth = parseXMatrixHeader(header);
    if (!auth) return undefined;
    const key = await this.peerKey(auth.origin, auth.key);
    if (!key) return undefined;
    const ok = verifyRequestSignature({ method: r.method, uri: r.uri, origin: auth.origin, destination: this.name, content: r.body }, auth, key);
    return ok ? auth.origin : undefined;
  }

  private async peerKey(server: string, keyId: string): Promise<Uint8Array | undefined> {
    const known = this.peerKeys.get(server)?.get(keyId);
    if (known) return known;
    const base = this.destinations[server];
    if (!base) return undefined;
    try {
      const res = await fetch(`${base}/_matrix/key/v2/server`);
      const body = (await res.json()) as { verify_keys?: Record<string, { key: string }> };
      const keys = new Map<string, Uint8Array>();
      for (const [id, v] of Object.entries(body.verify_keys ?? {})) {
        const k = decodeBase64(v.key);
        if (verifyJsonSignature(body, server, id, k)) keys.set(id, k);
      }
      this.peerKeys.set(server, keys);
      return keys.get(keyId);
    } catch {
      return undefined;
    }
  }

  /** The Authorization header for a request, as this server signs it. */
  authorization(destination: string, method: string, uri: string, content?: unknown, key: SigningKey = this.key, origin = this.name): string {
    return signRequest({ method, uri, origin, destination, content }, key, undefined);
  }

  /**
   * A signed request to a peer. `opts.authorization` replaces the header (forgeries),
   * `opts.rawBody` replaces the body actually sent (tampering after signing).
   */
  async send(
    destination: string,
    method: string,
    uri: string,
    content?: unknown,
    opts: { authorization?: string | null | string[]; rawBody?: string; key?: SigningKey } = {},
  ): Promise<{ status: number; body: any }> {
    const base = this.destinations[destination];
    if (!base) throw new Error(`no destination ${destination}`);
    if (Array.isArray(opts.authorization)) return this.sendRaw(base, method, uri, content, opts.authorization);
    const headers: Record<string, string> = {};
    const authorization = opts.authorization === undefined ? this.authorization(destination, method, uri, content, opts.key) : opts.authorization;
    if (authorization !== null) headers.authorization = authorization;
    const bodyText = opts.rawBody ?? (content === undefined ? undefined : canonicalJson(content));
    if (bodyText !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(base + uri, { method, headers, body: bodyText });
    const text = await res.text();
    let body: any = text;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: the test sees the text
    }
    return { status: res.status, body };
  }

  /** A request with several `Authorization` header lines (fetch would join them into one). */
  private sendRaw(base: string, method: string, uri: string, content: unknown, authorizations: string[]): Promise<{ status: number; body: any }> {
    const bodyText = content === undefined ? undefined : canonicalJson(content);
    // An array value goes out as one header line per element.
    const headers: Record<string, string | string[]> = { authorization: authorizations };
    if (bodyText !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(bodyText)) });
    const url = new URL(base + uri);
    return new Promise((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, method, path: url.pathname + url.search, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: any = text;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            // not JSON: the test sees the text
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(bodyText);
    });
  }

  /** Keeps a peek alive: renews it every `everyMs` until the returned function is called. */
  keepRenewing(destination: string, roomId: string, peekId: string, everyMs: number): () => Promise<void> {
    let stopped = false;
    let running: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      running = this.send(destination, 'POST', `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}/renew`, {}).catch(() => undefined);
    }, everyMs);
    return async () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await running;
    };
  }

  /** Every PDU of the transactions from `origin`, in the order they were received. */
  pdus(origin?: string): any[] {
    return this.transactions(origin).flatMap((t) => (t.body?.pdus ?? []) as any[]);
  }

  /** Transactions (PUT /send) received from `origin` with a valid signature, in arrival order. */
  transactions(origin?: string): RecordedRequest[] {
    return this.requests.filter((r) => r.method === 'PUT' && r.uri.startsWith('/_matrix/federation/v1/send/') && r.verifiedOrigin !== undefined && (!origin || r.verifiedOrigin === origin));
  }
}

/** PUT /peek path with `ver` query parameters. */
/**
 * A new room `host` hosts (added to `rooms`, which `host` answers peeks of: hostPeeksOf) that
 * a new user of `s` peeks; resolves once the user's sync shows it and `s` has recorded its
 * peek of it, with that peek's ID.
 */
export async function peekedRoomOn(s: FedServer, host: FakeServer, rooms: Map<string, FakeRoom>): Promise<{ room: FakeRoom; peekId: string }> {
  const room = new FakeRoom(host);
  rooms.set(room.roomId, room);
  const bob = await TestUser.register(s.url, uniqueName('bob'));
  const f = new SyncFollower(bob, 500);
  await f.once(0);
  const peek = await bob.peek(room.roomId);
  if (peek.status !== 200) throw new Error(`peek of ${room.roomId}: ${peek.status} ${JSON.stringify(peek.body)}`);
  await f.until('the peeked room', () => f.peeked.has(room.roomId));
  const row = await waitFor('the outbound peek is recorded', async () => (await outboundPeeks(s, room.roomId))[0]);
  return { room, peekId: row.peekId };
}

/**
 * A FakeServer handler hosting `rooms` for peeks: PUT /peek answers the room's snapshot,
 * /renew a renewal interval of a minute, DELETE `{}`; an unknown room is 404 (and so is any
 * request not signed by `onlyFrom`, when given). Other requests fall through (undefined).
 */
export function hostPeeksOf(rooms: Map<string, FakeRoom>, onlyFrom?: string): FakeServer['handler'] {
  return (r) => {
    const m = new URL(r.uri, 'http://x').pathname.match(/^\/_matrix\/federation\/v1\/peek\/([^/]+)\/[^/]+(\/renew)?$/);
    if (!m) return undefined;
    const room = rooms.get(decodeURIComponent(m[1]!));
    if (!room || (onlyFrom !== undefined && r.verifiedOrigin !== onlyFrom)) return { status: 404, body: { errcode: 'M_NOT_FOUND', error: 'unknown room' } };
    if (m[2]) return { status: 200, body: { renewal_interval: 60_000 } };
    return { status: 200, body: r.method === 'PUT' ? room.snapshot(60_000) : {} };
  };
}

export function peekPath(roomId: string, peekId: string, versions: string[] = ['10']): string {
  const q = versions.map((v) => `ver=${encodeURIComponent(v)}`).join('&');
  return `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}${q ? `?${q}` : ''}`;
}

// --- a device that keeps syncing -------------------------------------------------------

interface SyncingUser {
  sync(params: { since?: string; timeout?: number }): Promise<any>;
}

/**
 * Follows one device's /sync and collects, per room, every timeline event the device was
 * shown under `peek` (duplicates included, so a test can see an event shown twice).
 * Long-polls are kept short (`pollMs`) so the device counts as active for idle windows.
 */
export class SyncFollower {
  since?: string;
  readonly peeked = new Map<string, any[]>();
  readonly left = new Set<string>();
  readonly bodies: any[] = [];

  constructor(
    readonly user: SyncingUser,
    readonly pollMs = 1_000,
  ) {}

  private chain: Promise<unknown> = Promise.resolve();

  /** One sync (long-poll of at most `timeoutMs`), folded into what was seen. Calls queue up. */
  once(timeoutMs = this.pollMs): Promise<any> {
    const run = this.chain.then(() => this.syncOnce(timeoutMs));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Keeps the device syncing in the background (short long-polls), as a running client
   * does, so it never counts as idle; returns the function that stops it.
   */
  keepSyncing(pollMs = 250): () => Promise<void> {
    let stopped = false;
    const loop = (async () => {
      while (!stopped) await this.once(pollMs).catch(() => new Promise((r) => setTimeout(r, 100)));
    })();
    return async () => {
      stopped = true;
      await loop;
    };
  }

  private async syncOnce(timeoutMs: number): Promise<any> {
    const body = await this.user.sync({ since: this.since, timeout: this.since ? timeoutMs : 0 });
    this.bodies.push(body);
    this.since = body.next_batch;
    for (const [roomId, section] of Object.entries<any>(body.rooms?.peek ?? {})) {
      const list = this.peeked.get(roomId) ?? [];
      list.push(...(section.timeline?.events ?? []));
      this.peeked.set(roomId, list);
    }
    for (const roomId of Object.keys(body.rooms?.leave ?? {})) this.left.add(roomId);
    return body;
  }

  /** Syncs until `until()` holds, for at most `withinMs`. */
  async until(what: string, until: () => boolean, withinMs = 10_000): Promise<void> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      if (until()) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`SyncFollower: ${what} not seen within ${withinMs} ms; last bodies: ${JSON.stringify(this.bodies.slice(-2)).slice(0, 2000)}`);
      await this.once(Math.min(this.pollMs, left));
    }
  }

  /** Message bodies the device was shown in `roomId`'s peek timeline, in order. */
  messages(roomId: string): string[] {
    return (this.peeked.get(roomId) ?? []).filter((e) => e.type === 'm.room.message').map((e) => e.content?.body);
  }

  eventIds(roomId: string): string[] {
    return (this.peeked.get(roomId) ?? []).map((e) => e.event_id);
  }
}

// --- a room hosted by a fake server ----------------------------------------------------

/**
 * A room version 10 room hosted by a FakeServer: PDUs built, hashed and signed with our
 * crypto module, and the peek snapshot the fake answers a PUT /peek with.
 */
export class FakeRoom {
  readonly roomId: string;
  readonly creator: string;
  /** Every event, in room order. */
  readonly events: { id: string; pdu: Record<string, any> }[] = [];
  private readonly current = new Map<string, string>();

  constructor(
    readonly host: FakeServer,
    opts: { visibility?: string; localpart?: string; roomServer?: string } = {},
  ) {
    this.roomId = `!${uniqueName('r')}:${opts.roomServer ?? host.name}`;
    this.creator = `@${opts.localpart ?? 'creator'}:${host.name}`;
    this.add('m.room.create', { creator: this.creator, room_version: '10' }, '');
    this.add('m.room.member', { membership: 'join' }, this.creator);
    this.add('m.room.power_levels', { users: { [this.creator]: 100 } }, '');
    this.add('m.room.join_rules', { join_rule: 'public' }, '');
    this.add('m.room.history_visibility', { history_visibility: opts.visibility ?? 'world_readable' }, '');
    this.add('m.room.name', { name: 'A fake room' }, '');
    this.add('m.room.message', { msgtype: 'm.text', body: 'hello from the fake' });
  }

  /** A new signed event (not yet part of the room unless `append`). */
  build(type: string, content: Record<string, unknown>, stateKey?: string, opts: { sender?: string; key?: SigningKey; signer?: string } = {}): { id: string; pdu: Record<string, any> } {
    const sender = opts.sender ?? this.creator;
    const authIds = ['m.room.create\u0000', 'm.room.power_levels\u0000', `m.room.member\u0000${sender}`]
      .map((k) => this.current.get(k))
      .filter((id): id is string => id !== undefined && type !== 'm.room.create');
    const last = this.events.at(-1);
    const unsigned: Record<string, unknown> = {
      type,
      room_id: this.roomId,
      sender,
      content,
      ...(stateKey !== undefined ? { state_key: stateKey } : {}),
      origin_server_ts: Date.now(),
      depth: this.events.length + 1,
      prev_events: last ? [last.id] : [],
      auth_events: authIds,
    };
    const pdu = hashAndSignPdu(unsigned, opts.signer ?? this.host.name, opts.key ?? this.host.key);
    return { id: eventIdForPdu(pdu), pdu };
  }

  add(type: string, content: Record<string, unknown>, stateKey?: string): { id: string; pdu: Record<string, any> } {
    const e = this.build(type, content, stateKey);
    this.events.push(e);
    if (stateKey !== undefined) this.current.set(`${type}\u0000${stateKey}`, e.id);
    return e;
  }

  /** The snapshot of both MSC2444 drafts. */
  snapshot(renewalIntervalMs: number): Record<string, unknown> {
    const stateIds = new Set(this.current.values());
    const state = this.events.filter((e) => stateIds.has(e.id));
    const latest = this.events.at(-1)!;
    const latestIsState = stateIds.has(latest.id);
    return {
      room_version: '10',
      renewal_interval: renewalIntervalMs,
      latest_event: latest.pdu,
      state: state.map((e) => e.pdu),
      auth_chain: [],
      latest_event_state_ids: latestIsState ? [latest.id] : [],
      common_state_ids: state.filter((e) => e.id !== latest.id).map((e) => e.id),
      events: [...state, ...(latestIsState ? [] : [latest])].map((e) => e.pdu),
    };
  }
}

// --- an instance whose log lines a test can read ---------------------------------------

export interface LoggedPeekd {
  name: string;
  dataDir: string;
  /** Every log line (JSON text) written so far, across restarts. */
  lines: string[];
  readonly peekd: Peekd;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

/** A peekd that logs at `trace` into memory (its own database, streams and data dir). */
export async function startLoggedPeekd(env: Record<string, string> = {}): Promise<LoggedPeekd> {
  const { pino } = await import('pino');
  const { loadConfig } = await import('../../src/config.ts');
  const { startPeekd } = await import('../../src/server.ts');
  const { deleteStreams } = await import('../../src/nats/streams.ts');
  const { connectNats } = await import('../../src/nats/connection.ts');
  const { natsUrl } = await import('./services.ts');
  const name = `${uniqueName('logged')}.test`;
  const db = await createTestDatabase();
  const dir = tempDir();
  const prefix = `${uniqueName()}_`;
  const lines: string[] = [];
  const logger = pino({ level: 'trace' }, { write: (line: string) => void lines.push(line) });
  const config = loadConfig(
    {
      PEEKD_SERVER_NAME: name,
      PEEKD_LISTEN: '127.0.0.1:0',
      PEEKD_DATA_DIR: dir.path,
      NATS_URL: natsUrl(),
      ...(db.url ? { DATABASE_URL: db.url } : {}),
      PEEKD_STREAM_PREFIX: prefix,
      PEEKD_SHARDS: '8',
      PEEKD_LOG_LEVEL: 'trace',
      PEEKD_REGISTRATION_RATE_PER_SECOND: '10000',
      ...env,
    },
    undefined,
  );
  let current: Peekd | undefined = await startPeekd(config, { logger });
  return {
    name,
    dataDir: dir.path,
    lines,
    get peekd() {
      if (!current) throw new Error('not running');
      return current;
    },
    restart: async () => {
      const p = current;
      current = undefined;
      if (p) await whileClosing(p, () => p.close());
      current = await startPeekd(config, { logger });
    },
    cleanup: async () => {
      const p = current;
      current = undefined;
      try {
        if (p) {
          await whileClosing(p, () => p.close());
          const nc = await connectNats(natsUrl());
          await deleteStreams(nc, p.naming);
          await nc.close();
        }
      } finally {
        await db.drop();
        dir.remove();
      }
    },
  };
}

/**
 * The PeekExpired audit rows once there are at least `count` (the audit is its own
 * projection: it may trail the peek tables a moment).
 */
export async function expiriesOnce(s: FedServer, roomId: string, kind: 'inbound' | 'outbound' | 'device', count = 1, timeoutMs = 5_000) {
  return waitFor(
    `${count} ${kind} expiries of ${roomId} at ${s.name}`,
    async () => {
      const rows = await expiries(s, roomId, kind);
      return rows.length >= count ? rows : undefined;
    },
    timeoutMs,
  );
}
