// Hostile-input testing (issue 10, point 7): a wire-level HTTP client that sends exactly
// the bytes it is given, fast-check generators for malformed requests, the rules every
// answer must keep, a write counter that proves a refused request wrote nothing, and a
// ledger of what was tried, for docs/security.md.
//
// The rules, for every request: an answer arrives, its status is below 500, its
// Content-Type is exactly `application/json`, its body is JSON, an error body is a Matrix
// `{errcode, error}`, and a refused request (status >= 400) appended nothing to the event
// streams and wrote no row to the tables the handlers write directly (the read models
// derive from the streams, so they are checked through them and once more at the end).
import { Agent, request as httpRequest } from 'node:http';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import type { Peekd } from '../../src/server.ts';
import { rowsOf } from '../../src/store/db.ts';
import { projectionCheckpoints } from '../../src/store/schema.ts';

// --- the wire ------------------------------------------------------------------------

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface WireRequest {
  method: Method;
  /** Path and query exactly as sent (ASCII; bytes 0x80–0xFF go out raw, as latin1). */
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
}

export interface WireResponse {
  /** 0 when no answer arrived (connection reset, timeout). */
  status: number;
  contentType?: string;
  text: string;
  json: unknown;
  jsonOk: boolean;
  ms: number;
  /** Why no answer arrived. */
  failure?: string;
}

/** An HTTP/1.1 client that sends paths and bodies byte for byte (fetch would normalise them). */
export class HostileHttp {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 4 });
  private readonly host: string;
  private readonly port: number;

  constructor(
    baseUrl: string,
    readonly timeoutMs = 20_000,
  ) {
    const u = new URL(baseUrl);
    this.host = u.hostname;
    this.port = Number(u.port);
  }

  send(req: WireRequest): Promise<WireResponse> {
    const started = Date.now();
    const headers: Record<string, string> = { ...(req.headers ?? {}) };
    if (req.body !== undefined) headers['content-length'] = String(req.body.length);
    return new Promise<WireResponse>((resolve) => {
      let done = false;
      const finish = (r: Omit<WireResponse, 'ms'>) => {
        if (done) return;
        done = true;
        resolve({ ...r, ms: Date.now() - started });
      };
      let r;
      try {
        r = httpRequest({ host: this.host, port: this.port, method: req.method, path: req.path, headers, agent: this.agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => finish({ status: 0, text: '', json: undefined, jsonOk: false, failure: `response error: ${err.message}` }));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            let jsonOk = false;
            try {
              json = JSON.parse(text);
              jsonOk = true;
            } catch {
              // the rules report it
            }
            const ct = res.headers['content-type'];
            finish({ status: res.statusCode ?? 0, contentType: typeof ct === 'string' ? ct : undefined, text, json, jsonOk });
          });
        });
      } catch (err) {
        // Node refuses to send this request line (a test-side bug in a generator).
        throw new Error(`cannot send ${req.method} ${req.path.slice(0, 200)}: ${(err as Error).message}`, { cause: err });
      }
      const timer = setTimeout(() => r.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      r.on('close', () => clearTimeout(timer));
      r.on('error', (err) => finish({ status: 0, text: '', json: undefined, jsonOk: false, failure: err.message }));
      if (req.body !== undefined) r.write(req.body);
      r.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

// --- what a request wrote --------------------------------------------------------------

/** Positions of the event streams and row counts of the tables handlers write directly. */
export type WriteFingerprint = Record<string, number>;

const DIRECT_TABLES = ['accounts', 'devices', 'access_tokens', 'filters', 'room_aliases'] as const;
/** A fingerprint key naming a table digest (`WriteCounter`'s `digestTables`). */
const DIGEST_SUFFIX = '_digest';

/**
 * Counts writes: every room and peek change goes through a room actor into the ROOMS or
 * PEEKS stream before the request is answered (the read models follow from the streams),
 * and accounts, devices, tokens, filters and aliases are written by the handlers.
 */
export class WriteCounter {
  private jsm?: JetStreamManager;
  /**
   * `digestTables`: tables whose rows are upserted in place (profiles, presence, account
   * data, the room directory), where a row count cannot tell a write: a digest of their
   * whole content is compared instead (a change counts as one write). Small tables only.
   */
  constructor(
    private readonly peekd: () => Peekd,
    private readonly opts: { digestTables?: readonly string[] } = {},
  ) {}

  async snapshot(): Promise<WriteFingerprint> {
    const p = this.peekd();
    this.jsm ??= await jetstreamManager(p.nc);
    const digests = (this.opts.digestTables ?? []).map(
      (t) => `(SELECT ('x' || substr(md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')), 1, 8))::bit(32)::int FROM ${t} r) AS ${t}${DIGEST_SUFFIX}`,
    );
    const [rooms, peeks, rows] = await Promise.all([
      this.jsm.streams.info(p.naming.streamName('rooms')),
      this.jsm.streams.info(p.naming.streamName('peeks')),
      p.database.db.execute(sql.raw(`SELECT ${[...DIRECT_TABLES.map((t) => `(SELECT count(*)::int FROM ${t}) AS ${t}`), ...digests].join(', ')}`)),
    ]);
    const counts = rowsOf<Record<string, number>>(rows)[0] ?? {};
    const out: WriteFingerprint = { rooms_stream: rooms.state.last_seq, peeks_stream: peeks.state.last_seq };
    for (const t of DIRECT_TABLES) out[t] = Number(counts[t] ?? 0);
    for (const t of this.opts.digestTables ?? []) out[`${t}${DIGEST_SUFFIX}`] = Number(counts[`${t}${DIGEST_SUFFIX}`] ?? 0);
    return out;
  }

  /** Stream messages appended plus table rows added or removed (or digested tables changed) between two snapshots. */
  static delta(a: WriteFingerprint, b: WriteFingerprint): { total: number; detail: Record<string, number> } {
    const detail: Record<string, number> = {};
    let total = 0;
    for (const k of Object.keys(b)) {
      const d = k.endsWith(DIGEST_SUFFIX) ? (b[k] === a[k] ? 0 : 1) : Math.abs((b[k] ?? 0) - (a[k] ?? 0));
      if (d !== 0) detail[k] = d;
      total += d;
    }
    return { total, detail };
  }
}

/** Waits (at most `withinMs`) until every projection has committed everything in both streams. */
export async function projectionsCaughtUp(peekd: Peekd, withinMs = 15_000): Promise<void> {
  const fp = await new WriteCounter(() => peekd).snapshot();
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    const rows = await peekd.database.db.select().from(projectionCheckpoints);
    if (rows.length > 0 && rows.every((r) => r.seq >= (r.stream === 'rooms' ? fp.rooms_stream! : fp.peeks_stream!))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

// --- the ledger (figures for docs/security.md) -----------------------------------------

/** How much longer than usual the properties search (HOSTILE_SCALE=N). */
export const HOSTILE_SCALE = Number(process.env.HOSTILE_SCALE ?? 1);

/** Prints a file's figures once, at its end (and every distinct failure when asked to). */
export function printLedger(ledger: HostileLedger, title: string, tag: string): void {
  console.log(ledger.report(title));
  console.log(`${tag} summary ${JSON.stringify(ledger.summary())}`);
  if (HOSTILE_SCALE > 1 || process.env.HOSTILE_VERBOSE) console.log([...ledger.distinct.values()].join('\n\n'));
}

export class HostileLedger {
  tried = 0;
  accepted = 0;
  refused = 0;
  fiveXx = 0;
  noAnswer = 0;
  notMatrixError = 0;
  wrongContentType = 0;
  notJsonBody = 0;
  rowsWrittenByRefused = 0;
  expectationMisses = 0;
  readonly refusedByErrcode: Record<string, number> = {};
  readonly byKind: Record<string, number> = {};
  readonly byEndpoint: Record<string, number> = {};
  readonly slowest: { ms: number; what: string }[] = [];
  /** The first example of each distinct violation (endpoint and rule, numbers blanked). */
  readonly distinct = new Map<string, string>();

  record(endpoint: string, kind: string, res: WireResponse, rowsWritten: number, violations: string[], summary = ''): void {
    this.tried++;
    this.slowest.push({ ms: res.ms, what: `${endpoint} ${summary.slice(0, 100)} → ${res.status}` });
    this.slowest.sort((a, b) => b.ms - a.ms);
    this.slowest.length = Math.min(this.slowest.length, 5);
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    this.byEndpoint[endpoint] = (this.byEndpoint[endpoint] ?? 0) + 1;
    if (res.status === 0) this.noAnswer++;
    else if (res.status >= 500) this.fiveXx++;
    if (res.status >= 200 && res.status < 300) this.accepted++;
    if (res.status >= 400 || res.status === 0) {
      this.refused++;
      const errcode = (res.json as { errcode?: unknown } | undefined)?.errcode;
      const key = `${res.status} ${typeof errcode === 'string' ? errcode : '(no errcode)'}`;
      this.refusedByErrcode[key] = (this.refusedByErrcode[key] ?? 0) + 1;
      this.rowsWrittenByRefused += rowsWritten;
    }
    for (const v of violations) {
      if (v.startsWith('content-type')) this.wrongContentType++;
      else if (v.startsWith('not a Matrix error')) this.notMatrixError++;
      else if (v.startsWith('body is not JSON')) this.notJsonBody++;
      else if (v.startsWith('expected')) this.expectationMisses++;
    }
  }

  /** The figures, as one block of text. */
  report(title: string): string {
    const sorted = (o: Record<string, number>) =>
      Object.entries(o)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `    ${String(v).padStart(6)}  ${k}`)
        .join('\n');
    return [
      `==== ${title}: hostile-input figures ====`,
      `  inputs tried:                       ${this.tried}`,
      `  accepted (2xx):                     ${this.accepted}`,
      `  refused (4xx, 5xx, no answer):      ${this.refused}`,
      `  5xx answers (must be 0):            ${this.fiveXx}`,
      `  no answer (must be 0):              ${this.noAnswer}`,
      `  rows written by refused (must be 0): ${this.rowsWrittenByRefused}`,
      `  error bodies without errcode/error: ${this.notMatrixError}`,
      `  bodies that are not JSON:           ${this.notJsonBody}`,
      `  Content-Type not application/json:  ${this.wrongContentType}`,
      `  answers other than the expected:    ${this.expectationMisses}`,
      `  refused, by status and errcode:`,
      sorted(this.refusedByErrcode),
      `  inputs by kind:`,
      sorted(this.byKind),
      `  distinct violations: ${this.distinct.size}`,
      [...this.distinct.keys()].map((k) => `    ${k}`).join('\n'),
      `  slowest answers:`,
      this.slowest.map((x) => `    ${String(x.ms).padStart(6)} ms  ${x.what}`).join('\n'),
      `  inputs by endpoint:`,
      sorted(this.byEndpoint),
    ].join('\n');
  }

  summary(): Record<string, unknown> {
    return {
      tried: this.tried,
      accepted: this.accepted,
      refused: this.refused,
      fiveXx: this.fiveXx,
      noAnswer: this.noAnswer,
      rowsWrittenByRefused: this.rowsWrittenByRefused,
      notMatrixError: this.notMatrixError,
      notJsonBody: this.notJsonBody,
      wrongContentType: this.wrongContentType,
      expectationMisses: this.expectationMisses,
      refusedByErrcode: this.refusedByErrcode,
    };
  }
}

// --- endpoints -------------------------------------------------------------------------

/** What a path parameter holds, which decides the bad values it gets. */
export type ParamKind = 'roomId' | 'roomIdOrAlias' | 'alias' | 'userId' | 'eventId' | 'eventType' | 'stateKey' | 'txnId' | 'filterId' | 'keyId' | 'peekId' | 'opaque';

export type FieldType = 'string' | 'boolean' | 'integer' | 'object' | 'array' | 'stringArray' | 'objectArray';

export type FieldPath = (string | number)[];

export interface FieldSpec {
  path: FieldPath;
  type: FieldType;
  /** An item of the right type for huge arrays (default: 'x' for string arrays, {} for object arrays). */
  item?: (i: number) => unknown;
  /** The endpoint reads `null` as the field left out (no wrong type then). */
  nullable?: boolean;
}

export interface Baseline {
  params?: Record<string, string>;
  query?: [string, string][];
  body?: unknown;
  /** Client access token (auth 'user' / 'admin'). */
  token?: string;
  prefix?: string;
}

export interface Endpoint {
  /** e.g. `PUT /rooms/{roomId}/send/{eventType}/{txnId}`. */
  name: string;
  method: Method;
  /** Every prefix the route is registered under; each run picks one. */
  prefixes: string[];
  /** Template after the prefix, with `{param}` placeholders. */
  path: string;
  params?: Record<string, ParamKind>;
  /** Query parameters the handler reads. */
  query?: string[];
  auth: 'user' | 'admin' | 'server' | 'none';
  /** The body's typed fields (where the specification gives a type). */
  fields?: FieldSpec[];
  required?: FieldPath[];
  /** Where event content sits in the body (send/state: the body itself), for the 'values' kind. */
  contentPaths?: FieldPath[];
  /** The contents of the events the body would create (default: the objects at contentPaths). */
  eventContents?(body: any): unknown[];
  /** Params whose value becomes part of a stored event (NUL there is tested separately). */
  storedParams?: string[];
  /** A valid request (fresh per run: setup requests happen here). */
  baseline(n: number): Promise<Baseline> | Baseline;
  /** Its own kind of hostile input, and how it changes the baseline body. */
  customArb?: fc.Arbitrary<Mutation>;
  applyCustom?(m: Extract<Mutation, { kind: 'custom' }>, base: Baseline): { body?: unknown; bodyText?: string; summary: string };
  /** Rules of its own for an answer (e.g. what a transaction may accept). */
  extraCheck?(res: WireResponse, built: BuiltRequest, m: Mutation): string[];
  /** Called after every hostile request (to keep a ledger of accepted writes). */
  after?(res: WireResponse, base: Baseline, sent: BuiltRequest): void | Promise<void>;
  /** For a 2xx, how many stream writes it may make (undefined: any). */
  allowedWrites?(res: WireResponse): number | undefined;
  /** Errcodes the specification gives this endpoint for a body of the wrong shape, besides M_BAD_JSON. */
  shapeErrcodes?: string[];
  /** Its body limit, when not the API's (the admin API takes the federation limit). */
  bodyLimit?: number;
  /** Whether U+0000 anywhere in the body is refused at the edge (default: the API's rule). */
  edgeNul?: boolean;
  /** The register endpoint answers 401 with a UIA body (flows), which has no errcode. */
  uia?: boolean;
  /** May answer 429 M_LIMIT_EXCEEDED before looking at the body. */
  rateLimited?: boolean;
}

export interface Expectation {
  why: string;
  status: number[];
  errcode?: string[];
}

export interface BuiltRequest {
  req: WireRequest;
  expect?: Expectation;
  /** The body as JSON.parse reads it (when it parses). */
  parsed?: unknown;
  /** A one-line account of the input, for failure messages. */
  summary: string;
}

// --- the rules -------------------------------------------------------------------------

export function checkRules(ep: Endpoint, built: BuiltRequest, res: WireResponse, rowsWritten: number, allowed?: number): string[] {
  const v: string[] = [];
  if (res.status === 0) {
    v.push(`no answer (${res.failure})`);
    return v;
  }
  if (res.status >= 500) v.push(`status ${res.status} (5xx)`);
  if (res.contentType !== 'application/json') v.push(`content-type is ${JSON.stringify(res.contentType)}, not exactly application/json`);
  if (!res.jsonOk) v.push(`body is not JSON: ${JSON.stringify(res.text.slice(0, 200))}`);
  if (res.status >= 400) {
    const body = res.json as { errcode?: unknown; error?: unknown; flows?: unknown } | undefined;
    const isUia = ep.uia && res.status === 401 && Array.isArray(body?.flows);
    if (!isUia && (typeof body !== 'object' || body === null || typeof body.errcode !== 'string' || typeof body.error !== 'string')) {
      v.push(`not a Matrix error: ${res.text.slice(0, 300)}`);
    }
    if (rowsWritten > 0) v.push(`refused request wrote ${rowsWritten} rows/messages`);
  } else if (allowed !== undefined && rowsWritten > allowed) {
    v.push(`accepted request wrote ${rowsWritten} rows/messages, at most ${allowed} allowed`);
  }
  if (built.expect) {
    const e = built.expect;
    const errcode = (res.json as { errcode?: unknown } | undefined)?.errcode;
    const rateLimited = ep.rateLimited && res.status === 429 && errcode === 'M_LIMIT_EXCEEDED';
    const statusOk = e.status.includes(res.status);
    const errcodeOk = !e.errcode || (typeof errcode === 'string' && e.errcode.includes(errcode));
    if (!rateLimited && !(statusOk && errcodeOk)) {
      v.push(`expected ${e.why}: status ${e.status.join('|')}${e.errcode ? ` ${e.errcode.join('|')}` : ''}, got ${res.status} ${typeof errcode === 'string' ? errcode : ''}`);
    }
  }
  return v;
}

// --- building requests -----------------------------------------------------------------

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** The depth from which any sane nesting limit refuses a body (peekd's is lower). */
export const SURELY_TOO_DEEP = 1000;
/** The largest event the specification allows (canonical JSON bytes of the PDU). */
export const MAX_EVENT_BYTES = 65_536;

export const FOUR_XX = Array.from({ length: 100 }, (_, i) => 400 + i);
const NOT_JSON: Omit<Expectation, 'why'> = { status: [400], errcode: ['M_NOT_JSON'] };
const BAD_JSON: Omit<Expectation, 'why'> = { status: [400], errcode: ['M_BAD_JSON'] };
const SHAPE: Omit<Expectation, 'why'> = { status: [400], errcode: ['M_BAD_JSON', 'M_INVALID_PARAM', 'M_MISSING_PARAM', 'M_NOT_JSON'] };
const TOO_LARGE: Omit<Expectation, 'why'> = { status: [413], errcode: ['M_TOO_LARGE'] };

/** What the server must answer for this body text, judged in the order a server must judge it. */
export function bodyOracle(bytes: Buffer, limit: number): { expect?: Expectation; parsed?: unknown; object: boolean } {
  if (bytes.length > limit) return { expect: { why: `a body over the ${limit}-byte limit`, ...TOO_LARGE }, object: false };
  let text: string;
  try {
    text = utf8Strict.decode(bytes);
  } catch {
    return { expect: { why: 'a body that is not UTF-8', ...NOT_JSON }, object: false };
  }
  if (text.trim() === '') return { object: false };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { expect: { why: 'a body that is not JSON', ...NOT_JSON }, object: false };
  }
  if (valueDepth(parsed) > SURELY_TOO_DEEP) return { expect: { why: `JSON nested deeper than ${SURELY_TOO_DEEP}`, ...BAD_JSON }, parsed, object: false };
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { expect: { why: 'a JSON body that is not an object', ...BAD_JSON }, parsed, object: false };
  }
  return { parsed, object: true };
}

/** How deep arrays and objects nest in a parsed value (measured on the value, not the text). */
export function valueDepth(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth]);
  }
  return max;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** What in a parsed value no event may hold (canonical JSON, room version 10, Postgres). */
export function contentProblem(value: unknown): 'nul' | 'surrogate' | 'number' | undefined {
  let found: 'nul' | 'surrogate' | 'number' | undefined;
  const visit = (v: unknown, depth: number): void => {
    if (found === 'nul' || depth > 2000) return;
    if (typeof v === 'string') {
      if (v.includes('\u0000')) found = 'nul';
      else if (LONE_SURROGATE.test(v)) found = found ?? 'surrogate';
    } else if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) found = found ?? 'number';
    } else if (Array.isArray(v)) v.forEach((x) => visit(x, depth + 1));
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) {
        visit(k, depth + 1);
        visit(x, depth + 1);
      }
  };
  visit(value, 0);
  return found;
}

function getPath(obj: unknown, path: FieldPath): unknown {
  let cur = obj as any;
  for (const p of path) cur = cur?.[p];
  return cur;
}

function setPath(obj: any, path: FieldPath, value: unknown): any {
  const root = structuredClone(obj ?? {});
  let cur = root;
  for (let i = 0; i < path.length - 1; i++) {
    const p = path[i]!;
    if (cur[p] === null || typeof cur[p] !== 'object') cur[p] = typeof path[i + 1] === 'number' ? [] : {};
    cur = cur[p];
  }
  cur[path.at(-1)!] = value;
  return root;
}

function deletePath(obj: any, path: FieldPath): any {
  const root = structuredClone(obj ?? {});
  const parent = getPath(root, path.slice(0, -1)) as any;
  if (parent && typeof parent === 'object') delete parent[path.at(-1)!];
  return root;
}

/** `{…baseline, key: <raw JSON text>}`, without re-serialising the raw text. */
function withRawField(baseline: unknown, key: string, raw: string): string {
  const base = JSON.stringify(baseline ?? {});
  const inner = base.slice(1, -1);
  return `{${inner}${inner ? ',' : ''}${JSON.stringify(key)}:${raw}}`;
}

/** Sets a raw JSON text at `path` inside the baseline (path of object keys only). */
function withRawAt(baseline: unknown, path: FieldPath, raw: string): string {
  const marker = `__raw_${Math.random().toString(36).slice(2)}__`;
  const text = JSON.stringify(path.length === 0 ? marker : setPath(baseline, path, marker));
  if (path.length === 0) return raw;
  return text.replace(JSON.stringify(marker), raw);
}

function encodePathValue(v: string): string {
  return encodeURIComponent(v);
}

function encodeQuery(pairs: [string, string][]): string {
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

/** The request a mutation turns the baseline into, and what the answer must be. */
export function materialize(ep: Endpoint, base: Baseline, m: Mutation, opts: { bodyLimit: number; clientEdgeNul: boolean }): BuiltRequest {
  const prefix = base.prefix ?? ep.prefixes[0] ?? '';
  const params: Record<string, string> = {};
  for (const [k, v] of Object.entries(base.params ?? {})) params[k] = encodePathValue(v);
  let query: [string, string][] = (base.query ?? []).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]);
  const headers: Record<string, string> = {};
  const hasBody = ep.method !== 'GET';
  let bodyText: string | undefined = hasBody && base.body !== undefined ? JSON.stringify(base.body) : undefined;
  let bodyBytes: Buffer | undefined;
  let expect: Expectation | undefined;
  let summary: string = m.kind;
  let token = base.token;
  let contentType: string | null = 'application/json';
  const baseBody = base.body ?? {};

  switch (m.kind) {
    case 'none':
      summary = 'the unmodified baseline';
      break;
    case 'bytes':
      bodyBytes = Buffer.from(m.bytes);
      summary = `bytes ${Buffer.from(m.bytes).toString('hex').slice(0, 120)}`;
      break;
    case 'invalidUtf8': {
      const text = Buffer.from(JSON.stringify(baseBody), 'utf8');
      const at = Math.floor(m.at * (text.length + 1));
      bodyBytes = Buffer.concat([text.subarray(0, at), Buffer.from(m.seq), text.subarray(at)]);
      summary = `invalid UTF-8 ${Buffer.from(m.seq).toString('hex')} at byte ${at}`;
      break;
    }
    case 'notJson': {
      const text = JSON.stringify(baseBody);
      const at = Math.floor(m.at * (text.length + 1));
      switch (m.op) {
        case 'truncate':
          bodyText = text.slice(0, Math.min(at, text.length - 1));
          break;
        case 'insert':
          bodyText = text.slice(0, at) + m.text + text.slice(at);
          break;
        case 'delete':
          bodyText = text.slice(0, at) + text.slice(at + 1 + m.text.length);
          break;
        case 'classic':
          bodyText = m.text;
          break;
      }
      summary = `not JSON (${m.op} ${JSON.stringify(m.text)} at ${at}): ${JSON.stringify(bodyText?.slice(0, 120))}`;
      break;
    }
    case 'nonObject':
      bodyText = m.raw;
      summary = `non-object JSON ${m.raw.slice(0, 120)}`;
      break;
    case 'fieldType': {
      bodyText = JSON.stringify(setPath(baseBody, m.field, m.value));
      summary = `field ${m.field.join('.')} = ${JSON.stringify(m.value)?.slice(0, 80)}`;
      break;
    }
    case 'oddString':
      bodyText = JSON.stringify(setPath(baseBody, m.field, m.value));
      summary = `field ${m.field.join('.')} = ${JSON.stringify(m.value).slice(0, 80)}`;
      break;
    case 'missing':
      bodyText = JSON.stringify(deletePath(baseBody, m.field));
      summary = `required field ${m.field.join('.')} left out`;
      break;
    case 'huge': {
      const spec = m.field !== undefined ? ep.fields?.find((f) => f.path.join('.') === m.field) : undefined;
      const path: FieldPath = spec?.path ?? ['hostile_pad'];
      let value: unknown;
      switch (m.shape) {
        case 'string':
          value = m.char.repeat(m.size);
          break;
        case 'array': {
          const item = spec?.item ?? (spec?.type === 'stringArray' ? () => 'x' : spec?.type === 'objectArray' ? () => ({}) : (i: number) => i);
          value = Array.from({ length: m.size }, (_, i) => item(i));
          break;
        }
        case 'keys':
          value = Object.fromEntries(Array.from({ length: m.size }, (_, i) => [`k${i}`, i]));
          break;
        case 'oversize':
          value = 'x'.repeat(opts.bodyLimit + m.size);
          break;
      }
      bodyText = JSON.stringify(setPath(baseBody, path, value));
      summary = `huge ${m.shape} (${m.size}${m.shape === 'string' ? ` × ${JSON.stringify(m.char)}` : ''}) at ${path.join('.')}: ${bodyText.length} chars`;
      break;
    }
    case 'deep': {
      const open = m.container === '[' ? '['.repeat(m.depth) : '{"a":'.repeat(m.depth);
      const close = m.container === '[' ? ']'.repeat(m.depth) : '}'.repeat(m.depth);
      const nest = m.container === '[' ? `${open}${close}` : `${open}1${close}`;
      bodyText = m.top ? nest : withRawField(baseBody, 'hostile_nest', nest);
      summary = `nesting ${m.depth} deep (${m.container}${m.top ? ', the whole body' : ', in a field'})`;
      break;
    }
    case 'dupKeys': {
      const key = m.field ?? 'hostile_dup';
      const fieldVal = getPath(baseBody, [key]);
      const good = JSON.stringify(fieldVal === undefined ? 'x' : fieldVal);
      const bad = JSON.stringify(m.value);
      const rest = Object.fromEntries(Object.entries((baseBody as Record<string, unknown>) ?? {}).filter(([k]) => k !== key));
      const inner = JSON.stringify(rest).slice(1, -1);
      const [first, last] = m.wrongLast ? [good, bad] : [bad, good];
      bodyText = `{${JSON.stringify(key)}:${first}${inner ? `,${inner}` : ''},${JSON.stringify(key)}:${last}}`;
      summary = `duplicate key ${JSON.stringify(key)} (${m.wrongLast ? 'last' : 'first'} one ${bad.slice(0, 60)})`;
      break;
    }
    case 'values': {
      const paths = ep.contentPaths ?? [];
      const path = paths.length > 0 ? paths[m.where % paths.length]! : [];
      bodyText = withRawAt(baseBody, [...path, 'hostile_value'], m.raw);
      summary = `value ${m.raw} at ${[...path, 'hostile_value'].join('.')}`;
      break;
    }
    case 'contentType':
      contentType = m.type;
      if (m.garbage) bodyText = '{"unterminated":';
      summary = `content-type ${JSON.stringify(m.type)}${m.garbage ? ' with a body that is not JSON' : ''}`;
      break;
    case 'param': {
      if (!(m.param in params)) throw new Error(`${ep.name} has no param ${m.param}`);
      params[m.param] = m.seg.wire;
      summary = `param ${m.param} = ${m.seg.cls}: ${m.seg.wire.slice(0, 160)}${m.seg.wire.length > 160 ? `… (${m.seg.wire.length} chars)` : ''}`;
      expect = paramExpectation(ep, m.param, m.seg);
      break;
    }
    case 'query': {
      if (m.mode === 'replace') query = query.filter(([k]) => !m.pairs.some(([mk]) => mk === k));
      query = [...query, ...m.pairs];
      summary = `query ${encodeQuery(m.pairs).slice(0, 200)}`;
      break;
    }
    case 'auth':
      token = undefined;
      if (m.header !== undefined) headers.authorization = m.header;
      if (m.queryToken !== undefined) query = [...query, ['access_token', m.queryToken]];
      summary = `auth ${m.header !== undefined ? `header ${JSON.stringify(m.header.slice(0, 80))}` : 'no header'}${m.queryToken !== undefined ? ` ?access_token=${m.queryToken.slice(0, 60)}` : ''}`;
      if (ep.auth === 'user' || ep.auth === 'admin') {
        const huge = (m.header?.length ?? 0) + (m.queryToken?.length ?? 0) > 12_000;
        expect = huge
          ? { why: 'an over-long credential', status: [400, 401, 413, 414, 431], errcode: ['M_TOO_LARGE', 'M_UNKNOWN_TOKEN', 'M_MISSING_TOKEN', 'M_UNKNOWN'] }
          : { why: 'a missing or unknown access token', status: [401], errcode: ['M_MISSING_TOKEN', 'M_UNKNOWN_TOKEN'] };
      }
      break;
    case 'xmatrix':
      // Filled in by the federation runner (it knows the keys).
      summary = `X-Matrix ${m.variant}${m.origin !== undefined ? ` origin=${m.origin.slice(0, 60)}` : ''}${m.raw !== undefined ? ` ${JSON.stringify(m.raw.slice(0, 80))}` : ''}`;
      break;
    case 'custom': {
      if (!ep.applyCustom) throw new Error(`${ep.name} has no custom mutation`);
      const c = ep.applyCustom(m, base);
      bodyText = c.bodyText ?? (c.body === undefined ? undefined : JSON.stringify(c.body));
      summary = `${m.name}: ${c.summary}`;
      break;
    }
  }

  if (token !== undefined && (ep.auth === 'user' || ep.auth === 'admin')) headers.authorization = `Bearer ${token}`;
  if (bodyBytes === undefined && bodyText !== undefined) bodyBytes = Buffer.from(bodyText, 'utf8');
  if (!hasBody) bodyBytes = undefined;
  if (bodyBytes !== undefined && contentType !== null) headers['content-type'] = contentType;

  let path = prefix + ep.path.replace(/\{(\w+)\}/g, (_, p: string) => params[p] ?? '');
  if (query.length > 0) path += `?${encodeQuery(query)}`;

  // What the body alone decides (it is judged before anything else looks at the request).
  let parsed: unknown;
  if (bodyBytes !== undefined && m.kind !== 'contentType') {
    const o = bodyOracle(bodyBytes, opts.bodyLimit);
    parsed = o.parsed;
    if (o.expect) expect = o.expect;
    else if (o.object) {
      const bodyExpect = objectBodyExpectation(ep, m, o.parsed, opts);
      if (bodyExpect) expect = bodyExpect;
    }
  }
  return { req: { method: ep.method, path, body: bodyBytes, headers }, expect, parsed, summary };
}

function objectBodyExpectation(ep: Endpoint, m: Mutation, parsed: unknown, opts: { clientEdgeNul: boolean }): Expectation | undefined {
  // Event content: nothing Postgres, canonical JSON or the size limit cannot take.
  const contents = (ep.eventContents ? ep.eventContents(parsed) : (ep.contentPaths ?? []).map((p) => (p.length === 0 ? parsed : getPath(parsed, p)))).filter((c) => c !== undefined);
  if (opts.clientEdgeNul && contentProblem(parsed) === 'nul') return { why: 'a body with U+0000', ...BAD_JSON };
  for (const c of contents) {
    const problem = contentProblem(c);
    if (problem === 'nul') return { why: 'event content with U+0000', ...BAD_JSON };
    if (problem === 'surrogate') return { why: 'event content with a lone surrogate (not representable in UTF-8)', status: [400], errcode: ['M_BAD_JSON', 'M_NOT_JSON'] };
    if (problem === 'number') return { why: 'event content with a float or an integer outside ±(2^53−1)', ...BAD_JSON };
    const bytes = Buffer.byteLength(JSON.stringify(c) ?? '', 'utf8');
    if (bytes > MAX_EVENT_BYTES) return { why: `event content of ${bytes} bytes (over ${MAX_EVENT_BYTES})`, ...TOO_LARGE };
  }
  const shape = { ...SHAPE, errcode: [...SHAPE.errcode!, ...(ep.shapeErrcodes ?? [])] };
  if (m.kind === 'fieldType') return { why: `field ${m.field.join('.')} of the wrong type`, ...shape };
  if (m.kind === 'missing') return { why: `required field ${m.field.join('.')} missing`, ...shape };
  if (m.kind === 'dupKeys' && m.wrongLast && m.field !== undefined && ep.fields?.some((f) => f.path.length === 1 && f.path[0] === m.field)) {
    return { why: `duplicate key whose last value (the one JSON.parse keeps) has the wrong type`, status: [400], errcode: ['M_BAD_JSON', 'M_INVALID_PARAM', 'M_NOT_JSON'] };
  }
  return undefined;
}

const ID_KINDS: ParamKind[] = ['roomId', 'roomIdOrAlias', 'alias', 'userId'];

function paramExpectation(ep: Endpoint, param: string, seg: BadSegment): Expectation | undefined {
  const kind = ep.params?.[param];
  if (!kind) return undefined;
  const writesEvent = ep.storedParams?.includes(param) ?? false;
  // The specification bounds an event's type and state_key (255 bytes), not a transaction ID.
  const bounded = writesEvent && (kind === 'eventType' || kind === 'stateKey');
  switch (seg.cls) {
    case 'veryLong':
      // 431: the request line itself is past Node's header limit.
      return { why: `a ${seg.wire.length}-character path segment`, status: [400, 404, 414, 431], errcode: ['M_TOO_LARGE', 'M_INVALID_PARAM', 'M_UNRECOGNIZED', 'M_NOT_FOUND'] };
    case 'badEncoding':
      return { why: 'a path segment that does not percent-decode to UTF-8', status: [400, 404] };
    case 'overlong':
      if (ID_KINDS.includes(kind)) return { why: `a ${kind} over 255 bytes`, status: [400, 414], errcode: ['M_INVALID_PARAM', 'M_TOO_LARGE', 'M_BAD_JSON'] };
      if (bounded) return { why: `an event ${kind} over 255 bytes`, status: [400, 413, 414], errcode: undefined };
      if (kind === 'eventId') return { why: 'an event ID over 255 bytes', status: FOUR_XX, errcode: undefined };
      if (kind === 'peekId') return { why: 'a peek ID that is not 1–8 of [0-9A-Za-z.=_-]', status: [400], errcode: ['M_UNRECOGNIZED'] };
      return undefined;
    case 'malformed':
      if (kind === 'roomId' || kind === 'roomIdOrAlias' || kind === 'alias') return { why: `a malformed ${kind}`, status: [400], errcode: ['M_INVALID_PARAM'] };
      if (kind === 'userId') return { why: 'a malformed user ID', status: FOUR_XX };
      if (kind === 'peekId') return { why: 'a peek ID that is not 1–8 of [0-9A-Za-z.=_-]', status: [400], errcode: ['M_UNRECOGNIZED'] };
      if (kind === 'eventId') return { why: 'a malformed event ID', status: FOUR_XX };
      return undefined;
    case 'nul':
      if (kind === 'roomId' || kind === 'roomIdOrAlias' || kind === 'alias') return { why: `a ${kind} with U+0000`, status: [400], errcode: ['M_INVALID_PARAM'] };
      if (writesEvent) return { why: `an event ${kind} with U+0000 (no read model can store it)`, status: [400], errcode: ['M_INVALID_PARAM', 'M_BAD_JSON'] };
      return undefined;
    case 'empty':
      if (ID_KINDS.includes(kind) || kind === 'peekId') return { why: `an empty ${kind}`, status: FOUR_XX };
      return undefined;
    default:
      return undefined;
  }
}

// --- mutations (what the generators produce) ------------------------------------------

export type Mutation =
  | { kind: 'none' }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'invalidUtf8'; seq: number[]; at: number }
  | { kind: 'notJson'; op: 'truncate' | 'insert' | 'delete' | 'classic'; at: number; text: string }
  | { kind: 'nonObject'; raw: string }
  | { kind: 'fieldType'; field: FieldPath; value: unknown }
  | { kind: 'oddString'; field: FieldPath; value: string }
  | { kind: 'missing'; field: FieldPath }
  | { kind: 'huge'; shape: 'string' | 'array' | 'keys' | 'oversize'; field?: string; size: number; char: string }
  | { kind: 'deep'; depth: number; container: '[' | '{'; top: boolean }
  | { kind: 'dupKeys'; field?: string; value: unknown; wrongLast: boolean }
  | { kind: 'values'; raw: string; where: number }
  | { kind: 'contentType'; type: string | null; garbage: boolean }
  | { kind: 'param'; param: string; seg: BadSegment }
  | { kind: 'query'; mode: 'add' | 'replace'; pairs: [string, string][] }
  | { kind: 'auth'; header?: string; queryToken?: string }
  | { kind: 'xmatrix'; variant: string; origin?: string; raw?: string }
  /** An endpoint's own mutation (e.g. hostile PDUs in a transaction), applied by `applyCustom`. */
  | { kind: 'custom'; name: string; data: unknown };

export type MutationKind = Mutation['kind'];

/** Strings of the right type and the wrong value: empty, blank, unknown names, IDs, paths, control characters. */
const ODD_STRINGS = [
  '',
  ' ',
  'x',
  'm.login.password',
  'StartDevicePeek',
  'Tick',
  '__proto__',
  'constructor',
  '!r:example.org',
  '@u:example.org',
  '../../etc/passwd',
  '%00',
  '\u0000',
  '\u0001\u007f',
  'a'.repeat(300),
  'é'.repeat(200),
  '😀',
  '\ud83d\ude00',
  'true',
  '10',
  'public ',
  'PUBLIC',
];

/** The mutation kinds that apply to an endpoint. */
export function kindsFor(ep: Endpoint): MutationKind[] {
  const kinds: MutationKind[] = [];
  if (ep.method !== 'GET') {
    kinds.push('bytes', 'invalidUtf8', 'notJson', 'nonObject', 'huge', 'deep', 'dupKeys', 'values', 'contentType');
    if (ep.fields?.length) kinds.push('fieldType');
    if (ep.fields?.some((f) => f.type === 'string')) kinds.push('oddString');
    if (ep.required?.length) kinds.push('missing');
  }
  if (ep.params && Object.keys(ep.params).length > 0) kinds.push('param');
  kinds.push('query');
  if (ep.auth === 'user' || ep.auth === 'admin') kinds.push('auth');
  if (ep.auth === 'server') kinds.push('xmatrix');
  if (ep.customArb) kinds.push('custom');
  return kinds;
}

/** Invalid UTF-8: a lone continuation byte, bad lead bytes, overlongs, CESU-8 surrogates, past U+10FFFF, truncations. */
export const INVALID_UTF8: number[][] = [
  [0xc3, 0x28],
  [0xff],
  [0xfe],
  [0x80],
  [0xbf],
  [0xc0, 0xaf],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0xaf],
  [0xf0, 0x80, 0x80, 0xaf],
  [0xed, 0xa0, 0x80], // CESU-8 lone high surrogate U+D800
  [0xed, 0xbf, 0xbf], // CESU-8 lone low surrogate U+DFFF
  [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80], // CESU-8 pair for U+1F600
  [0xf4, 0x90, 0x80, 0x80], // U+110000
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xe2, 0x82], // truncated €
  [0xc3],
  [0xf0, 0x9f, 0x98],
];

const CLASSIC_NOT_JSON = [
  '{',
  '}',
  '{"a":}',
  "{'a':1}",
  '{a:1}',
  '[1,]',
  '{"a":1,}',
  'NaN',
  'Infinity',
  '-',
  '{"a":01}',
  '{"a":"\\x"}',
  '{"a":"\\u12"}',
  '{} {}',
  '{}garbage',
  '{/* c */}',
  '\ufeff{}',
  '{"a":"line\nbreak"}',
  '{"a":"tab\there"}',
  '{"a" 1}',
  '{"a":tru}',
  '{"a":.5}',
  '{"a":+1}',
  '{"a":0x10}',
  'undefined',
  '{"a":undefined}',
  '\u0000',
  '{"a":"unterminated}',
  '{"a":[1,2}',
  '["a":1]',
];

/** Raw JSON values no event may carry, or that test an edge of canonical JSON. */
export const HOSTILE_VALUES = [
  '"\\u0000"',
  '"a\\u0000b"',
  '{"\\u0000":1}',
  '"\\ud800"',
  '"\\udfff"',
  '"\\udc00\\ud800"',
  '"x\\ud83d"',
  '{"\\ud800":1}',
  '1.5',
  '0.1',
  '-0.0',
  '1e999',
  '-1e999',
  '1E400',
  '9007199254740992',
  '9007199254740993',
  '-9007199254740992',
  '123456789012345678901234567890',
  '[1.5]',
  '{"n":2.5}',
  '1e2',
  '-0',
  '"\\uffff"',
  '"\\ufeff"',
  '"\\u2028\\u2029"',
  '"\\ud83d\\ude00"',
  '"' + 'é'.repeat(10) + '"',
];

// eslint-disable-next-line no-loss-of-precision -- 2^53 + 1 on purpose: a number JSON can carry but not exactly
const JSON_SCALARS: unknown[] = [null, true, false, 0, -1, 1.5, 9007199254740993, '', 'x', 'm.login.password', [], ['x'], [1], [null], {}, { a: 1 }, [{}]];

function typeOf(v: unknown): FieldType[] {
  if (typeof v === 'string') return ['string'];
  if (typeof v === 'boolean') return ['boolean'];
  if (typeof v === 'number') return Number.isInteger(v) ? ['integer'] : [];
  if (Array.isArray(v)) {
    const t: FieldType[] = ['array'];
    if (v.every((x) => typeof x === 'string')) t.push('stringArray');
    if (v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x))) t.push('objectArray');
    return t;
  }
  if (v !== null && typeof v === 'object') return ['object'];
  return [];
}

/** A JSON value that is not of `type` (nor null, when the field is `nullable`). */
export function wrongTypeValue(type: FieldType, opts: { nullable?: boolean } = {}): fc.Arbitrary<unknown> {
  const wrong = (v: unknown) => !typeOf(v).includes(type) && !(opts.nullable && v === null);
  const pool = JSON_SCALARS.filter(wrong);
  const arbs = [
    { weight: 4, arbitrary: fc.constantFrom(...pool) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).filter(wrong) },
  ];
  // An array whose items are of the wrong type: the array passes a check of its own type.
  if (type === 'stringArray') arbs.push({ weight: 4, arbitrary: fc.constantFrom<unknown>([1], [null], [{}], [[]], ['ok', 2]) });
  if (type === 'objectArray') arbs.push({ weight: 4, arbitrary: fc.constantFrom<unknown>([1], [null], ['x'], [[]], [{}, 2]) });
  return fc.oneof(...arbs);
}

// --- bad path segments ---------------------------------------------------------------

export type SegClass = 'overlong' | 'veryLong' | 'malformed' | 'badEncoding' | 'nul' | 'traversal' | 'random' | 'empty' | 'rawBytes';

export interface BadSegment {
  wire: string;
  cls: SegClass;
}

const BAD_ENCODINGS = ['%', '%Z', '%ZZ', '%C3%28', '%FF', '%FE%FF', '%ED%A0%80', '%ED%BF%BF', '%E0%80%AF', '%C0%AF', '%F4%90%80%80', '%80', 'a%2', '%E2%82', '%%'];

function sigilOf(kind: ParamKind): string {
  switch (kind) {
    case 'roomId':
      return '!';
    case 'alias':
      return '#';
    case 'userId':
      return '@';
    case 'eventId':
      return '$';
    case 'roomIdOrAlias':
      return '!';
    default:
      return '';
  }
}

function malformedFor(kind: ParamKind, server: string): string[] {
  switch (kind) {
    case 'roomId':
      return [
        'abc',
        '!',
        '!:',
        '!a',
        '!a:',
        '!:' + server,
        '!a:bad host',
        '!a:' + server + ':99999',
        '!a:' + server + ':',
        '#a:' + server,
        '@u:' + server,
        '!a:[::1',
        '! :' + server,
        '!a b:' + server,
        '!a:ser ver',
        '!a\tb:' + server,
        '!a:exa_mple.com/x',
      ];
    case 'roomIdOrAlias':
      return [
        'abc',
        '!',
        '#',
        '!:',
        '#:',
        '!a',
        '#a',
        '#a:',
        '!:' + server,
        '#:' + server,
        '#a b:' + server,
        '#a:b:c d',
        '!a:bad host',
        '@u:' + server,
        '$e:' + server,
        '+g:' + server,
        '!a:' + server + ':70000',
      ];
    case 'alias':
      return ['abc', '#', '#:', '#a', '#a:', '#:' + server, '#a b:' + server, '#a:b:c', '!r:' + server, '#a:bad host', '#a\u000bb:' + server];
    case 'userId':
      return ['u', '@', '@:', '@a', '@a:', '@:' + server, '@a b:' + server, '@Ä:' + server, '!r:' + server, '@a:bad host', '@a:' + server + ':99999'];
    case 'eventId':
      return ['x', '$', '$:', '$a:b', '$' + 'a'.repeat(43) + '=', 'event'];
    case 'peekId':
      return ['123456789', 'bad!', 'a b', 'a/b', 'é', '*', '~', 'ab:c', '!room'];
    default:
      return ['.', '..', ' ', 'a b', '*', '>', '$', '#', '?', '&', '+'];
  }
}

/** Bad values for one kind of path parameter (`nul`: whether NUL may appear). */
export function badSegment(kind: ParamKind, server: string, opts: { nul: boolean; classes?: SegClass[] }): fc.Arbitrary<BadSegment> {
  const sigil = sigilOf(kind);
  const lead = kind === 'roomIdOrAlias' ? fc.constantFrom('!', '#') : fc.constant(sigil);
  const overlong = fc.tuple(lead, fc.integer({ min: 256, max: 1000 }), fc.constantFrom('a', 'é', '😀')).map(([s, n, ch]): BadSegment => {
    const wrap = (local: string) => (s ? `${s}${local}:${server}` : local);
    let local = ch;
    while (Buffer.byteLength(wrap(local)) <= n) local += ch;
    const id = wrap(local);
    // The router caps a parameter at 1024 characters (decoded): past that it is 'veryLong'.
    return { wire: encodeURIComponent(id), cls: id.length > 1024 ? 'veryLong' : 'overlong' };
  });
  const veryLong = fc.tuple(fc.integer({ min: 1025, max: 6000 }), fc.constantFrom('a', '%2F', '%C3%A9')).map(([n, unit]): BadSegment => {
    const s = sigil ? encodeURIComponent(sigil) : '';
    return { wire: `${s}${unit.repeat(n)}`, cls: 'veryLong' };
  });
  const malformed = fc.constantFrom(...malformedFor(kind, server)).map((v): BadSegment => ({ wire: encodeURIComponent(v), cls: 'malformed' }));
  const badEncoding = fc.tuple(fc.constantFrom(...BAD_ENCODINGS), fc.boolean()).map(([e, wrap]): BadSegment => ({
    // 'z' after the escape: a following hex digit could complete a truncated one ('%2' + 'b').
    wire: wrap && sigil ? `${encodeURIComponent(sigil)}a${e}z%3A${encodeURIComponent(server)}` : e,
    cls: 'badEncoding',
  }));
  const nul = fc.constantFrom('\u0000', 'a\u0000b', '\u0000\u0000').map((v): BadSegment => ({
    wire: sigil ? encodeURIComponent(`${sigil}${v}:${server}`) : encodeURIComponent(v),
    cls: 'nul',
  }));
  const traversal = fc.constantFrom('..', '.', '%2E%2E', '..%2F..', '%2E%2E%2F%2E%2E%2Fkey%2Fv2%2Fserver', 'a%2Fb', '%2F', '%5C..%5C', '~').map((wire): BadSegment => ({ wire, cls: 'traversal' }));
  const empty = fc.constant<BadSegment>({ wire: '', cls: 'empty' });
  const random = fc
    .string({ unit: 'binary', minLength: 1, maxLength: 40 })
    .filter((s) => opts.nul || !s.includes('\u0000'))
    .map((s): BadSegment => {
      try {
        const wire = encodeURIComponent(s);
        // A random string that lacks the sigil and colon of an ID kind is malformed.
        const malformedId = (kind === 'roomId' || kind === 'alias' || kind === 'roomIdOrAlias') && !/^[!#][^:]+:[0-9A-Za-z.-]+$/.test(s);
        return { wire, cls: malformedId ? 'malformed' : 'random' };
      } catch {
        return { wire: '%ED%A0%80', cls: 'badEncoding' }; // a lone surrogate: CESU bytes
      }
    });
  const rawBytes = fc.constantFrom('\xff', 'a\xc3\x28', '\x80\x80').map((wire): BadSegment => ({ wire, cls: 'rawBytes' }));
  const byClass: [SegClass, fc.Arbitrary<BadSegment>][] = [
    ['overlong', overlong],
    ['veryLong', veryLong],
    ['malformed', malformed],
    ['badEncoding', badEncoding],
    ['traversal', traversal],
    ['empty', empty],
    ['random', random],
    ['rawBytes', rawBytes],
  ];
  if (opts.nul) byClass.push(['nul', nul]);
  const chosen = byClass.filter(([c]) => !opts.classes || opts.classes.includes(c)).map(([, a]) => a);
  return fc.oneof(...(chosen.length > 0 ? chosen : [random]));
}

// --- query values -----------------------------------------------------------------------

const QUERY_VALUES = [
  '',
  '-1',
  'NaN',
  '1e999',
  '0x10',
  '1.5',
  '-0',
  'Infinity',
  '99999999999999999999',
  'true',
  'null',
  '[]',
  '{}',
  '%ZZ',
  '%C3%28',
  '%00',
  '%FF',
  'a%26b%3Dc',
  '%23',
  '..',
  's0_0',
  't1-2',
];

function decodeURIComponentSafe(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

export function queryMutation(names: string[], opts: { maxNumber: number }): fc.Arbitrary<Mutation> {
  const value = fc.oneof(
    fc.constantFrom(...QUERY_VALUES),
    fc.string({ unit: 'grapheme', maxLength: 30 }).map((s) => encodeURIComponent(s)),
    fc.integer({ min: -5, max: opts.maxNumber }).map(String),
    fc.integer({ min: 1000, max: 12_000 }).map((n) => 'a'.repeat(n)),
    fc.integer({ min: 2, max: 3000 }).map((d) => encodeURIComponent(`${'{"room":'.repeat(d)}1${'}'.repeat(d)}`)),
    fc
      .constantFrom(
        '{"room":{"timeline":{"limit":"x"}}}',
        '{"room":{"timeline":{"limit":-1}}}',
        '{"room":{"timeline":{"limit":1.5}}}',
        '{"room":[]}',
        '{"room":{"timeline":[]}}',
        '{',
        '{"a":"\\ud800"}',
        '{"a":"\\u0000"}',
        '{"room":{"timeline":{"limit":1e999}}}',
      )
      .map(encodeURIComponent),
  );
  const name = names.length > 0 ? fc.oneof(fc.constantFrom(...names), fc.constantFrom('access_token', 'x', '%ZZ', '', '__proto__', 'constructor')) : fc.constantFrom('x', '%ZZ', '__proto__', '');
  return fc
    .record({
      mode: fc.constantFrom<'add' | 'replace'>('add', 'replace'),
      pairs: fc.array(fc.tuple(name, value), { minLength: 1, maxLength: 3 }).map((ps) => {
        // A repeated parameter: the same name twice.
        const first = ps[0]!;
        const pairs = ps.length === 1 ? ps : [first, [first[0], ps[1]![1]] as [string, string], ...ps.slice(2)];
        // A long-poll timeout stays short, whatever else it is.
        return pairs.map(([k, v]): [string, string] => (k === 'timeout' && Number(decodeURIComponentSafe(v)) > opts.maxNumber ? [k, String(opts.maxNumber)] : [k, v]));
      }),
    })
    .map(({ mode, pairs }): Mutation => ({ kind: 'query', mode, pairs }));
}

// --- the generator of one kind ----------------------------------------------------------

export interface GenContext {
  serverName: string;
  /** Only these classes of bad path segment (default: all). */
  segClasses?: SegClass[];
  /** Whether NUL may appear in `storedParams` (the end-of-file section only). */
  nulInStoredParams: boolean;
  /** Sync-style timeouts must stay short: the largest plain number a query value may be. */
  maxQueryNumber: number;
}

export function mutationArb(ep: Endpoint, kind: MutationKind, ctx: GenContext): fc.Arbitrary<Mutation> {
  const fieldNames = (ep.fields ?? []).map((f) => f.path);
  switch (kind) {
    case 'bytes':
      return fc
        .oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.string({ unit: 'binary', maxLength: 100 }).map((s) => new Uint8Array(Buffer.from(s, 'utf8'))),
        )
        .map((bytes): Mutation => ({ kind: 'bytes', bytes }));
    case 'invalidUtf8':
      return fc.record({ seq: fc.constantFrom(...INVALID_UTF8), at: fc.double({ min: 0, max: 1, noNaN: true }) }).map((r): Mutation => ({ kind: 'invalidUtf8', ...r }));
    case 'notJson':
      return fc.oneof(
        fc.constantFrom(...CLASSIC_NOT_JSON).map((text): Mutation => ({ kind: 'notJson', op: 'classic', at: 0, text })),
        fc
          .record({
            op: fc.constantFrom<'truncate' | 'insert' | 'delete'>('truncate', 'insert', 'delete'),
            at: fc.double({ min: 0, max: 1, noNaN: true }),
            text: fc.constantFrom('{', '}', '[', ']', ',', ':', '"', '\\', "'", ' ', 'x', '\u0001', '\n', '\\u'),
          })
          .map((r): Mutation => ({ kind: 'notJson', ...r })),
      );
    case 'nonObject':
      return fc
        .oneof(
          fc.constantFrom('null', 'true', 'false', '0', '-1', '1.5', '""', '"{}"', '[]', '[{}]', '[[]]', '1e999'),
          fc
            .jsonValue({ maxDepth: 3 })
            .filter((v) => v === null || typeof v !== 'object' || Array.isArray(v))
            .map((v) => JSON.stringify(v)),
        )
        .map((raw): Mutation => ({ kind: 'nonObject', raw }));
    case 'fieldType': {
      const specs = ep.fields ?? [];
      return fc.integer({ min: 0, max: specs.length - 1 }).chain((i) => fieldTypeArb(specs[i]!));
    }
    case 'missing':
      return fc.constantFrom(...(ep.required ?? [])).map((field): Mutation => ({ kind: 'missing', field }));
    case 'huge':
      return fc
        .oneof(
          fc.record({
            shape: fc.constant<'string'>('string'),
            field: fc.option(fc.constantFrom(...fieldNames.filter((p) => ep.fields!.find((f) => f.path === p)!.type === 'string').map((p) => p.join('.')), 'hostile_pad'), { nil: undefined }),
            size: fc.integer({ min: 10_000, max: 100_000 }),
            char: fc.constantFrom('x', 'é', '😀', '\\', '"', '\u0001'),
          }),
          fc
            .record({
              shape: fc.constant<'array'>('array'),
              field: fc.option(fc.constantFrom(...fieldNames.filter((p) => /Array$|^array$/.test(ep.fields!.find((f) => f.path === p)!.type)).map((p) => p.join('.')), 'hostile_pad'), {
                nil: undefined,
              }),
              size: fc.integer({ min: 1_000, max: 20_000 }),
              char: fc.constant(''),
            })
            .map((r) => {
              // Arrays of valid items (invitees, initial state) make real work: at most 5,000.
              const valid = ep.fields?.find((f) => f.path.join('.') === r.field)?.item !== undefined;
              return valid ? { ...r, size: 1_000 + (r.size % 4_001) } : r;
            }),
          fc.record({ shape: fc.constant<'keys'>('keys'), field: fc.constant(undefined), size: fc.integer({ min: 1_000, max: 20_000 }), char: fc.constant('') }),
          fc.record({ shape: fc.constant<'oversize'>('oversize'), field: fc.constant(undefined), size: fc.integer({ min: 1, max: 65_536 }), char: fc.constant('') }),
        )
        .map((r): Mutation => ({ kind: 'huge', ...r }));
    case 'deep':
      return fc
        .record({ depth: fc.oneof(fc.integer({ min: 100, max: 1200 }), fc.integer({ min: 100, max: 10_000 })), container: fc.constantFrom<'[' | '{'>('[', '{'), top: fc.boolean() })
        .map((r): Mutation => ({ kind: 'deep', ...r }));
    case 'dupKeys': {
      const typed = (ep.fields ?? []).filter((f) => f.path.length === 1);
      const untyped = fc.record({ field: fc.option(fc.constantFrom('body', 'msgtype'), { nil: undefined }), value: fc.constantFrom(...JSON_SCALARS), wrongLast: fc.boolean() });
      const arb =
        typed.length === 0
          ? untyped
          : fc.oneof(
              untyped,
              fc
                .integer({ min: 0, max: typed.length - 1 })
                .chain((i) => fc.record({ field: fc.constant(String(typed[i]!.path[0])), value: wrongTypeValue(typed[i]!.type, { nullable: typed[i]!.nullable }), wrongLast: fc.boolean() })),
            );
      return arb.map((r): Mutation => ({ kind: 'dupKeys', ...r }));
    }
    case 'oddString': {
      const strings = (ep.fields ?? []).filter((f) => f.type === 'string');
      return fc
        .record({ i: fc.integer({ min: 0, max: strings.length - 1 }), value: fc.oneof(fc.constantFrom(...ODD_STRINGS), fc.string({ unit: 'binary', maxLength: 20 })) })
        .map(({ i, value }): Mutation => ({ kind: 'oddString', field: strings[i]!.path, value }));
    }
    case 'values':
      return fc.record({ raw: fc.constantFrom(...HOSTILE_VALUES), where: fc.nat(8) }).map((r): Mutation => ({ kind: 'values', ...r }));
    case 'contentType':
      return fc
        .record({
          type: fc.constantFrom<string | null>(
            null,
            'text/plain',
            'application/x-www-form-urlencoded',
            'multipart/form-data; boundary=x',
            'application/json; charset=latin1',
            'application/json; charset=utf-16',
            'APPLICATION/JSON',
            '',
            '*/*',
            'application/jsonx',
          ),
          garbage: fc.boolean(),
        })
        .map((r): Mutation => ({ kind: 'contentType', ...r }));
    case 'param': {
      const names = Object.keys(ep.params ?? {});
      return fc.constantFrom(...names).chain((param) =>
        badSegment(ep.params![param]!, ctx.serverName, { nul: ctx.nulInStoredParams || !(ep.storedParams ?? []).includes(param), classes: ctx.segClasses }).map((seg): Mutation => ({
          kind: 'param',
          param,
          seg,
        })),
      );
    }
    case 'query':
      return queryMutation(ep.query ?? [], { maxNumber: ctx.maxQueryNumber });
    case 'auth': {
      const garbage = fc.oneof(
        fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 80 }).map((s) => s.replace(/[\r\n]/g, '')),
        fc.constantFrom('pkd_', 'null', 'undefined', '%00', "' OR 1=1 --", 'pkd_' + 'A'.repeat(43)),
      );
      return fc.oneof(
        garbage.map((g): Mutation => ({ kind: 'auth', header: `Bearer ${g}` })),
        garbage.map((g): Mutation => ({ kind: 'auth', header: `Basic ${g}` })),
        fc.constantFrom('', 'Bearer', 'Bearer ', 'X-Matrix origin=a', 'bearer').map((header): Mutation => ({ kind: 'auth', header })),
        fc.constant<Mutation>({ kind: 'auth' }),
        garbage.map((g): Mutation => ({ kind: 'auth', queryToken: encodeURIComponent(g) })),
        fc.integer({ min: 13_000, max: 40_000 }).map((n): Mutation => ({ kind: 'auth', header: `Bearer ${'t'.repeat(n)}` })),
      );
    }
    case 'none':
      return fc.constant<Mutation>({ kind: 'none' });
    case 'custom':
      if (!ep.customArb) throw new Error(`${ep.name} has no custom mutation`);
      return ep.customArb;
    case 'xmatrix':
      return fc.oneof(
        fc
          .constantFrom(
            'none',
            'garbage',
            'wrong-destination',
            'wrong-key',
            'other-server-key',
            'tampered-uri',
            'tampered-body',
            'self-origin',
            'bad-origin',
            'unknown-key-id',
            'unreachable-origin',
            'huge',
          )
          .map((variant): Mutation => ({ kind: 'xmatrix', variant })),
        fc.string({ unit: 'grapheme-ascii', maxLength: 200 }).map((raw): Mutation => ({ kind: 'xmatrix', variant: 'raw', raw: raw.replace(/[\r\n]/g, '') })),
        fc
          .record({ origin: fc.constantFrom('', ' ', 'a b', 'ex"ample', 'x'.repeat(300), '[::1', 'host:99999', 'é.test', '127.0.0.1:1'), quote: fc.boolean() })
          .map(({ origin, quote }): Mutation => ({ kind: 'xmatrix', variant: 'origin', origin: quote ? `"${origin}"` : origin })),
      );
  }
}

/** One field of the wrong type. */
export function fieldTypeArb(spec: FieldSpec): fc.Arbitrary<Mutation> {
  return wrongTypeValue(spec.type, { nullable: spec.nullable }).map((value): Mutation => ({ kind: 'fieldType', field: spec.path, value }));
}

// --- running ------------------------------------------------------------------------------

export interface RunContext {
  http: HostileHttp;
  ledger: HostileLedger;
  writes: WriteCounter;
  gen: GenContext;
  bodyLimit: number;
  /** Client API: U+0000 anywhere in a body is refused at the edge (M_BAD_JSON). */
  clientEdgeNul: boolean;
  /** Federation: signs (or forges) the X-Matrix header of a built request. */
  authorize?(ep: Endpoint, built: BuiltRequest, m: Mutation): void;
}

let counter = 0;

/** Sends one hostile request and checks every rule; throws with the whole story when one fails. */
export async function runOne(ep: Endpoint, m: Mutation, ctx: RunContext): Promise<WireResponse> {
  const n = ++counter;
  const base = await ep.baseline(n);
  base.prefix ??= ep.prefixes[n % ep.prefixes.length];
  const built = materialize(ep, base, m, { bodyLimit: ep.bodyLimit ?? ctx.bodyLimit, clientEdgeNul: ep.edgeNul ?? ctx.clientEdgeNul });
  ctx.authorize?.(ep, built, m);
  const before = await ctx.writes.snapshot();
  const res = await ctx.http.send(built.req);
  let after = await ctx.writes.snapshot();
  if (res.status === 0) {
    // The server may still be working on it: wait until its writes stop, so they are
    // counted here and not against the next request.
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 1_000));
      const again = await ctx.writes.snapshot();
      if (WriteCounter.delta(after, again).total === 0) break;
      after = again;
    }
  }
  const { total, detail } = WriteCounter.delta(before, after);
  const accepted = res.status >= 200 && res.status < 300;
  const refused = res.status >= 400 || res.status === 0;
  const allowed = accepted ? ep.allowedWrites?.(res) : undefined;
  const violations = checkRules(ep, built, res, total, allowed);
  if (res.status !== 0) violations.push(...(ep.extraCheck?.(res, built, m) ?? []));
  if (res.status === 0 && total > 0) violations.push(`a request that got no answer wrote ${total} rows/messages`);
  if (m.kind !== 'none') ctx.ledger.record(ep.name, m.kind, res, refused ? total : 0, violations, built.summary);
  await ep.after?.(res, base, built);
  if (violations.length > 0) {
    const body = built.req.body;
    const story = [
      `${ep.name}: ${violations.join('; ')}`,
      `  input: ${built.summary}`,
      `  sent: ${built.req.method} ${built.req.path.slice(0, 300)}${built.req.path.length > 300 ? `… (${built.req.path.length} chars)` : ''}`,
      body !== undefined ? `  body (${body.length} bytes): ${JSON.stringify(body.subarray(0, 200).toString('latin1'))}` : '  no body',
      `  answer: ${res.status} ${res.contentType ?? '(no content-type)'} ${res.text.slice(0, 300)} (${res.ms} ms)`,
      total > 0 ? `  writes: ${JSON.stringify(detail)}` : '',
    ]
      .filter(Boolean)
      .join('\n');
    const signature = `${ep.name} | ${m.kind} | ${violations.map((v) => v.replace(/\d+/g, 'N').replace(/: .*$/, '').slice(0, 110)).join(' ; ')}`;
    if (!ctx.ledger.distinct.has(signature)) ctx.ledger.distinct.set(signature, story);
    throw new Error(story);
  }
  return res;
}

export interface Failure {
  label: string;
  seed: number;
  path?: string;
  numRuns: number;
  message: string;
}

/** Runs a property and returns its (shrunk) failure instead of throwing, so every kind gets its turn. */
export async function checkProperty<T>(
  label: string,
  arb: fc.Arbitrary<T>,
  run: (v: T) => Promise<unknown>,
  params: { numRuns: number; timeLimitMs: number; seed?: number },
): Promise<Failure | undefined> {
  const details = await fc.check(
    fc.asyncProperty(fc.limitShrink(arb, 25), async (v) => {
      await run(v);
    }),
    { numRuns: params.numRuns, interruptAfterTimeLimit: params.timeLimitMs, markInterruptAsFailure: false, seed: params.seed, endOnFailure: false },
  );
  if (!details.failed) return undefined;
  const err = details.errorInstance as Error | undefined;
  return {
    label,
    seed: details.seed,
    path: details.counterexamplePath ?? undefined,
    numRuns: details.numRuns,
    message: `${err?.message ?? String(details.errorInstance)}\n  counterexample: ${fc.stringify(details.counterexample).slice(0, 400)}`,
  };
}

export function formatFailures(failures: Failure[]): string {
  return failures.map((f) => `[${f.label}] (seed ${f.seed}, path ${f.path}, after ${f.numRuns} runs)\n${f.message}`).join('\n\n');
}

/**
 * Every kind of hostile input that applies to one endpoint, each its own property (and
 * each typed field its own, so one field's bug does not hide another's); returns every
 * failure, shrunk.
 */
export async function attackEndpoint(ep: Endpoint, ctx: RunContext, runsOf: (kind: MutationKind) => number, timeLimitMs: number): Promise<Failure[]> {
  const failures: Failure[] = [];
  for (const kind of kindsFor(ep)) {
    const properties: [string, fc.Arbitrary<Mutation>][] =
      kind === 'fieldType' ? (ep.fields ?? []).map((f) => [`${ep.name} / fieldType ${f.path.join('.')}`, fieldTypeArb(f)]) : [[`${ep.name} / ${kind}`, mutationArb(ep, kind, ctx.gen)]];
    for (const [label, arb] of properties) {
      const f = await checkProperty(label, arb, (m) => runOne(ep, m, ctx), { numRuns: runsOf(kind), timeLimitMs });
      if (f) failures.push(f);
    }
  }
  return failures;
}

/** One kind of hostile input across every endpoint it applies to, as one property. */
export async function sweepKind(label: string, eps: Endpoint[], kind: MutationKind, ctx: RunContext, gen: GenContext, params: { numRuns: number; timeLimitMs: number }): Promise<Failure | undefined> {
  const targets = eps.filter((e) => kindsFor(e).includes(kind));
  const arb = fc.integer({ min: 0, max: targets.length - 1 }).chain((i) => mutationArb(targets[i]!, kind, gen).map((m): [number, Mutation] => [i, m]));
  return checkProperty(`sweep / ${label}`, arb, ([i, m]) => runOne(targets[i]!, m, ctx), params);
}

/**
 * Sends every endpoint's baseline request; returns what went wrong, per endpoint (the
 * generators only make sense when the request they mutate would pass). `problems` says
 * what is wrong with one answer (default: it is not a success).
 */
export async function baselineFailures(table: readonly Endpoint[], ctx: RunContext, problems: (ep: Endpoint, res: WireResponse) => string[]): Promise<string[]> {
  const failures: string[] = [];
  for (const ep of table) {
    const res = await runOne(ep, { kind: 'none' }, ctx).catch((err: Error) => ({ status: -1, text: err.message }) as WireResponse);
    for (const p of problems(ep, res)) failures.push(`${ep.name}: ${p}`);
  }
  return failures;
}
