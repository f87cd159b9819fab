// Hostile input on every federation and key endpoint (issue 10, point 7): the requests
// come from F, a fake remote server, correctly signed so the body reaches validation —
// and also unsigned or forged (X-Matrix headers of every wrong kind). fast-check mutates
// a request that would succeed: its body (bytes, invalid UTF-8, broken JSON, the wrong
// shape, huge, deep, duplicate keys), the PDUs of a transaction (wrong types, tampered
// after signing, re-signed with bad fields), path parameters (room IDs, peek IDs, key
// IDs, transaction IDs) and the query. Every answer must keep the rules of
// test/helpers/hostile.ts: never a 5xx, always `application/json`, errors as Matrix
// {errcode, error}, and nothing written by a refused request. At the end the inbound
// peek table and the peek audit must match the accepted peek requests, the hosted room
// must be untouched, and the peeked remote room must hold exactly the accepted PDUs.
//
// The figures are printed once at the end, for docs/security.md.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import fc from 'fast-check';
import { canonicalJson, eventIdForPdu, generateSigningKey, hashAndSignPdu, signRequest } from '../../src/crypto/index.ts';
import { syncapiRoomEvents } from '../../src/store/schema.ts';
import { auditRows, FakeRoom, inboundPeeks, peekPath, startFederation, type FakeServer, type Federation, type FedServer } from '../helpers/federation.ts';
import { TestUser } from '../helpers/matrix.ts';
import {
  attackEndpoint,
  bodyOracle,
  formatFailures,
  FOUR_XX,
  HostileHttp,
  HostileLedger,
  HOSTILE_SCALE,
  printLedger,
  baselineFailures,
  projectionsCaughtUp,
  sweepKind,
  WriteCounter,
  type BuiltRequest,
  type Endpoint,
  type GenContext,
  type Mutation,
  type MutationKind,
  type RunContext,
  type SegClass,
  type WireResponse,
} from '../helpers/hostile.ts';

const SCALE = HOSTILE_SCALE;
const RUNS = 3 * SCALE;
const PARAM_RUNS = 8 * SCALE;
/** Hostile PDUs have many shapes: more runs. */
const PDU_RUNS = 20 * SCALE;
const SWEEP_RUNS = 40 * SCALE;
const FED = '/_matrix/federation/v1';
const RENEWAL_MS = 3_600_000;

let fed: Federation;
let A: FedServer;
/** The remote server the requests come from. */
let F: FakeServer;
/** Another remote server (its key signs forgeries). */
let G: FakeServer;
let http: HostileHttp;
const ledger = new HostileLedger();
let ctx: RunContext;
/** Requests go out unsigned (the "unsigned" sweep). */
let unsigned = false;

let alice: TestUser;
/** A world_readable room hosted by A: peeks target it; no PDU for it may be taken from F. */
let hostedRoom: string;
let hostedAlias: string;
let hostedEventsBefore: string[];
/** A message of the hosted room, sent while it was world_readable (the history endpoints' anchor). */
let hostedMessage: string;
/** A room hosted by F that A peeks: F's PDUs for it are accepted. */
let remote: FakeRoom;
const remoteAccepted = new Set<string>();
const remoteBefore = new Set<string>();
/** Accepted inbound peek requests on the hosted room, and which peek IDs are live. */
const peekLedger = { starts: 0, renews: 0, deletes: 0, live: new Set<string>() };

const ok = (res: WireResponse) => res.status >= 200 && res.status < 300;

function genContext(): GenContext {
  return { serverName: A.name, nulInStoredParams: true, maxQueryNumber: 50 };
}

/** The peek a request named, when its path still names the hosted room. */
function peekOf(sent: BuiltRequest): string | undefined {
  const m = sent.req.path.match(/^\/_matrix\/federation\/v1\/peek\/([^/?]+)\/([^/?]+)/);
  if (!m) return undefined;
  try {
    return decodeURIComponent(m[1]!) === hostedRoom ? decodeURIComponent(m[2]!) : undefined;
  } catch {
    return undefined;
  }
}

/** The results of a transaction that were accepted (no error). */
function acceptedPdus(res: WireResponse): string[] {
  const pdus = (res.json as { pdus?: Record<string, { error?: unknown }> } | undefined)?.pdus ?? {};
  return Object.entries(pdus)
    .filter(([, r]) => r && typeof r === 'object' && r.error === undefined)
    .map(([id]) => id);
}

let txn = 0;
const newTxn = () => `h${Date.now().toString(36)}${++txn}`;

// --- hostile PDUs ----------------------------------------------------------------------

/** A field of a PDU and values it must never be accepted with. */
const PDU_FIELDS: { field: string; values: unknown[] }[] = [
  { field: 'type', values: [5, null, {}, [], '', 't'.repeat(300)] },
  { field: 'room_id', values: [5, null, 'nope', '!x:unreachable.test', ''] },
  { field: 'sender', values: [5, null, 'notauser', '@x:unreachable.test', '@' + 'x'.repeat(300) + ':a.test'] },
  { field: 'content', values: [null, 5, 'x', []] },
  { field: 'depth', values: ['1', -1, 0, 1.5, null, 2 ** 60] },
  { field: 'origin_server_ts', values: ['1', -1, 1.5, null, 2 ** 60] },
  { field: 'prev_events', values: ['x', [5], [null], [{}], {}, Array.from({ length: 500 }, (_, i) => `$e${i}`)] },
  { field: 'auth_events', values: ['x', [5], [null], {}, Array.from({ length: 500 }, (_, i) => `$e${i}`)] },
  { field: 'hashes', values: [null, 'x', {}, { sha256: 5 }] },
  { field: 'signatures', values: [null, 'x', {}, { x: 'y' }] },
  { field: 'state_key', values: [5, null, {}, 'k'.repeat(300)] },
  { field: 'redacts', values: [5, {}] },
];

function isCanonical(v: unknown): boolean {
  try {
    canonicalJson(v);
    return true;
  } catch {
    return false;
  }
}

type PduMutation =
  | { how: 'random'; items: unknown[] }
  | { how: 'tamper' | 'resign'; field: number; value: number }
  | { how: 'foreignSignature' }
  | { how: 'hugeContent'; size: number }
  | { how: 'many'; count: number }
  | { how: 'hostedRoom' }
  | { how: 'unsignedOnly' };

const pduMutationArb: fc.Arbitrary<Mutation> = fc
  .oneof(
    // Canonical JSON only: F must be able to sign the transaction, or it is refused as unauthenticated.
    fc.array(fc.jsonValue({ maxDepth: 3 }).filter(isCanonical), { minLength: 1, maxLength: 5 }).map((items): PduMutation => ({ how: 'random', items })),
    fc.record({
      how: fc.constantFrom<'tamper' | 'resign'>('tamper', 'resign'),
      field: fc.nat(PDU_FIELDS.length - 1),
      value: fc.nat(10),
    }),
    fc.constant<PduMutation>({ how: 'foreignSignature' }),
    fc.integer({ min: 66_000, max: 200_000 }).map((size): PduMutation => ({ how: 'hugeContent', size })),
    fc.integer({ min: 51, max: 400 }).map((count): PduMutation => ({ how: 'many', count })),
    fc.constant<PduMutation>({ how: 'hostedRoom' }),
    fc.constant<PduMutation>({ how: 'unsignedOnly' }),
  )
  .map((data): Mutation => ({ kind: 'custom', name: 'hostile PDU', data }));

/** Applies a PDU mutation to a transaction. Only `unsignedOnly` (outside the signed part) may be accepted. */
function applyPduMutation(m: PduMutation, base: { body?: unknown }): { body: unknown; summary: string } {
  const body = structuredClone(base.body) as { pdus: Record<string, unknown>[] };
  const fresh = remote.build('m.room.message', { msgtype: 'm.text', body: `hostile pdu ${txn}` });
  switch (m.how) {
    case 'random':
      return { body: { ...body, pdus: m.items }, summary: `random items ${JSON.stringify(m.items).slice(0, 120)}` };
    case 'tamper':
    case 'resign': {
      const spec = PDU_FIELDS[m.field]!;
      const value = spec.values[m.value % spec.values.length];
      const pdu: Record<string, unknown> = { ...fresh.pdu, [spec.field]: value };
      // Re-signing recomputes hashes and signatures: those two fields can only be tampered with.
      if (m.how === 'resign' && spec.field !== 'hashes' && spec.field !== 'signatures') {
        // Hash and sign it as it is: a PDU the sender did sign, with a field of the wrong shape.
        const { hashes: _h, signatures: _s, ...unsignedPdu } = pdu;
        try {
          const signed = hashAndSignPdu(unsignedPdu, F.name, F.key);
          return { body: { ...body, pdus: [signed] }, summary: `${spec.field} = ${JSON.stringify(value)?.slice(0, 80)}, re-signed` };
        } catch {
          // Not canonical JSON: it cannot be signed; send it tampered.
        }
      }
      return { body: { ...body, pdus: [pdu] }, summary: `${spec.field} = ${JSON.stringify(value)?.slice(0, 80)} after signing` };
    }
    case 'foreignSignature': {
      const { hashes: _h, signatures: _s, ...rest } = fresh.pdu;
      const pdu = hashAndSignPdu(rest, F.name, otherKeyWithFsId());
      return { body: { ...body, pdus: [pdu] }, summary: "signed with F's key ID but another key" };
    }
    case 'hugeContent': {
      const big = remote.build('m.room.message', { msgtype: 'm.text', body: 'x'.repeat(m.size) });
      return { body: { ...body, pdus: [big.pdu] }, summary: `a properly signed PDU of ${m.size}+ bytes` };
    }
    case 'many':
      return { body: { ...body, pdus: Array.from({ length: m.count }, () => ({})) }, summary: `${m.count} PDUs (the limit is 50)` };
    case 'hostedRoom': {
      const pdu: Record<string, unknown> = { ...fresh.pdu, room_id: hostedRoom };
      const { hashes: _h, signatures: _s, ...rest } = pdu;
      return { body: { ...body, pdus: [hashAndSignPdu(rest, F.name, F.key)] }, summary: 'a signed PDU for a room A hosts' };
    }
    case 'unsignedOnly': {
      const pdu = { ...fresh.pdu, unsigned: { age: 'x', hostile: [1.5] } };
      return { body: { ...body, pdus: [pdu] }, summary: 'a valid PDU with hostile `unsigned`' };
    }
  }
}

// --- the endpoint table: every route src/http/federation registers ---------------------
//
//   GET    /_matrix/key/v2/server, /_matrix/key/v2/server/{keyId}, /_matrix/federation/v1/version
//   PUT    /_matrix/federation/v1/peek/{roomId}/{peekId}?ver=
//   POST   /_matrix/federation/v1/peek/{roomId}/{peekId}/renew
//   DELETE /_matrix/federation/v1/peek/{roomId}/{peekId}
//   GET    /_matrix/federation/v1/query/directory?room_alias=
//   PUT    /_matrix/federation/v1/send/{txnId}
// (MATRIX.md also lists /state, /state_ids, /event, /backfill, /get_missing_events and
// /event_auth for servers outside the room; src/http/federation does not register them
// yet. When it does, add them here.)

function endpoints(): Endpoint[] {
  const peekEndpoint = (name: string, method: 'PUT' | 'POST' | 'DELETE', suffix: string, extra: Partial<Endpoint>): Endpoint => ({
    name,
    method,
    prefixes: [FED],
    path: `/peek/{roomId}/{peekId}${suffix}`,
    params: { roomId: 'roomId', peekId: 'peekId' },
    auth: 'server',
    baseline: () => ({}),
    ...extra,
  });
  const sendBody = (pdus: unknown[]) => ({ origin: F.name, origin_server_ts: Date.now(), pdus, edus: [] });
  const sendFields: Endpoint['fields'] = [
    { path: ['origin'], type: 'string' },
    { path: ['origin_server_ts'], type: 'integer' },
    // Items that are not PDUs get per-PDU errors (or a 400); the array itself is typed.
    { path: ['pdus'], type: 'array' },
    { path: ['edus'], type: 'array', item: (i) => ({ edu_type: 'm.typing', content: { room_id: hostedRoom, user_id: `@u${i}:${F.name}`, typing: true } }) },
    { path: ['expired_peeks'], type: 'objectArray', item: (i) => ({ room_id: `!r${i}:${F.name}`, peek_id: `p${i}` }) },
  ];
  return [
    { name: 'GET /_matrix/key/v2/server', method: 'GET', prefixes: [''], path: '/_matrix/key/v2/server', auth: 'none', baseline: () => ({}) },
    {
      name: 'GET /_matrix/key/v2/server/{keyId}',
      method: 'GET',
      prefixes: [''],
      path: '/_matrix/key/v2/server/{keyId}',
      params: { keyId: 'keyId' },
      auth: 'none',
      baseline: () => ({ params: { keyId: 'ed25519:auto' } }),
    },
    { name: 'GET /version', method: 'GET', prefixes: [FED], path: '/version', auth: 'none', baseline: () => ({}) },
    peekEndpoint('PUT /peek/{roomId}/{peekId}', 'PUT', '', {
      query: ['ver'],
      baseline: (n) => ({
        params: { roomId: hostedRoom, peekId: `h${n.toString(36)}`.slice(0, 8) },
        query: [
          ['ver', '10'],
          ['ver', '9'],
        ],
        body: {},
      }),
      after: (res, _b, sent) => {
        const peekId = peekOf(sent);
        if (ok(res) && peekId !== undefined && sent.req.method === 'PUT') {
          peekLedger.starts++;
          peekLedger.live.add(peekId);
        }
      },
    }),
    peekEndpoint('POST /peek/{roomId}/{peekId}/renew', 'POST', '/renew', {
      baseline: () => ({ params: { roomId: hostedRoom, peekId: 'live1' }, body: {} }),
      after: (res, _b, sent) => {
        if (ok(res) && peekOf(sent) !== undefined) peekLedger.renews++;
      },
    }),
    peekEndpoint('DELETE /peek/{roomId}/{peekId}', 'DELETE', '', {
      baseline: async (n) => {
        const peekId = `d${n.toString(36)}`.slice(0, 8);
        const r = await F.send(A.name, 'PUT', peekPath(hostedRoom, peekId), {});
        if (r.status !== 200) throw new Error(`setup PUT peek: ${r.status} ${JSON.stringify(r.body)}`);
        peekLedger.starts++;
        peekLedger.live.add(peekId);
        return { params: { roomId: hostedRoom, peekId } };
      },
      after: (res, _b, sent) => {
        const peekId = peekOf(sent);
        if (ok(res) && peekId !== undefined) {
          peekLedger.deletes++;
          peekLedger.live.delete(peekId);
        }
      },
    }),
    // History for servers not in the room (MSC2444): reads, nothing written.
    {
      name: 'GET /state_ids/{roomId}',
      method: 'GET',
      prefixes: [FED],
      path: '/state_ids/{roomId}',
      params: { roomId: 'roomId' },
      query: ['event_id'],
      auth: 'server',
      baseline: () => ({ params: { roomId: hostedRoom }, query: [['event_id', hostedMessage]] }),
      allowedWrites: () => 0,
    },
    {
      name: 'GET /state/{roomId}',
      method: 'GET',
      prefixes: [FED],
      path: '/state/{roomId}',
      params: { roomId: 'roomId' },
      query: ['event_id'],
      auth: 'server',
      baseline: () => ({ params: { roomId: hostedRoom }, query: [['event_id', hostedMessage]] }),
      allowedWrites: () => 0,
    },
    {
      name: 'GET /event/{eventId}',
      method: 'GET',
      prefixes: [FED],
      path: '/event/{eventId}',
      params: { eventId: 'eventId' },
      auth: 'server',
      baseline: () => ({ params: { eventId: hostedMessage } }),
      allowedWrites: () => 0,
    },
    {
      name: 'GET /event_auth/{roomId}/{eventId}',
      method: 'GET',
      prefixes: [FED],
      path: '/event_auth/{roomId}/{eventId}',
      params: { roomId: 'roomId', eventId: 'eventId' },
      auth: 'server',
      baseline: () => ({ params: { roomId: hostedRoom, eventId: hostedMessage } }),
      allowedWrites: () => 0,
    },
    {
      name: 'GET /backfill/{roomId}',
      method: 'GET',
      prefixes: [FED],
      path: '/backfill/{roomId}',
      params: { roomId: 'roomId' },
      query: ['v', 'limit'],
      auth: 'server',
      baseline: () => ({
        params: { roomId: hostedRoom },
        query: [
          ['v', hostedMessage],
          ['limit', '10'],
        ],
      }),
      allowedWrites: () => 0,
    },
    {
      name: 'POST /get_missing_events/{roomId}',
      method: 'POST',
      prefixes: [FED],
      path: '/get_missing_events/{roomId}',
      params: { roomId: 'roomId' },
      auth: 'server',
      fields: [
        { path: ['earliest_events'], type: 'stringArray' },
        { path: ['latest_events'], type: 'stringArray' },
        { path: ['limit'], type: 'integer' },
        { path: ['min_depth'], type: 'integer' },
      ],
      required: [['earliest_events'], ['latest_events']],
      baseline: () => ({ params: { roomId: hostedRoom }, body: { earliest_events: [], latest_events: [hostedMessage], limit: 10 } }),
      allowedWrites: () => 0,
    },
    {
      name: 'GET /query/directory',
      method: 'GET',
      prefixes: [FED],
      path: '/query/directory',
      query: ['room_alias'],
      auth: 'server',
      baseline: () => ({ query: [['room_alias', hostedAlias]] }),
    },
    {
      name: 'PUT /send/{txnId}',
      method: 'PUT',
      prefixes: [FED],
      path: '/send/{txnId}',
      params: { txnId: 'txnId' },
      auth: 'server',
      fields: sendFields,
      required: [['origin'], ['origin_server_ts'], ['pdus']],
      baseline: () => ({ params: { txnId: newTxn() }, body: sendBody([]) }),
      customArb: pduMutationArb,
      applyCustom: (m, base) => applyPduMutation(m.data as PduMutation, base),
      allowedWrites: (res) => acceptedPdus(res).length,
      extraCheck: (res, _built, m) => {
        if (!ok(res) || m.kind !== 'custom') return [];
        const accepted = acceptedPdus(res);
        return (m.data as PduMutation).how === 'unsignedOnly' || accepted.length === 0 ? [] : [`a hostile PDU was accepted: ${accepted.join(', ')}`];
      },
      after: (res) => recordAccepted(res),
    },
    {
      name: 'PUT /send/{txnId} (a PDU of a room A peeks)',
      method: 'PUT',
      prefixes: [FED],
      path: '/send/{txnId}',
      params: { txnId: 'txnId' },
      auth: 'server',
      fields: sendFields,
      required: [['origin'], ['origin_server_ts'], ['pdus']],
      baseline: () => ({ params: { txnId: newTxn() }, body: sendBody([remote.build('m.room.message', { msgtype: 'm.text', body: `hostile ${txn}` }).pdu]) }),
      customArb: pduMutationArb,
      applyCustom: (m, base) => applyPduMutation(m.data as PduMutation, base),
      allowedWrites: (res) => acceptedPdus(res).length,
      extraCheck: (res, _built, m) => {
        if (!ok(res) || m.kind !== 'custom') return [];
        const accepted = acceptedPdus(res);
        return (m.data as PduMutation).how === 'unsignedOnly' || accepted.length === 0 ? [] : [`a hostile PDU was accepted: ${accepted.join(', ')}`];
      },
      after: (res, _base, sent) => recordAccepted(res, sent),
    },
  ];
}

/** Accepted PDUs of the peeked room become part of it (the next PDU builds on them). */
function recordAccepted(res: WireResponse, sent?: BuiltRequest): void {
  if (!ok(res)) return;
  const pdus = ((sent?.parsed as { pdus?: unknown[] } | undefined)?.pdus ?? []) as Record<string, unknown>[];
  for (const id of acceptedPdus(res)) {
    remoteAccepted.add(id);
    const pdu = pdus.find((p) => {
      try {
        return eventIdForPdu(p) === id;
      } catch {
        return false;
      }
    });
    if (pdu && pdu.room_id === remote.roomId) remote.events.push({ id, pdu });
  }
}

const table: Endpoint[] = endpoints();

/** Signs every request as F (or leaves it unsigned, or forges it, for the xmatrix kind). */
function authorize(ep: Endpoint, built: BuiltRequest, m: Mutation): void {
  if (ep.auth !== 'server') return;
  const uri = built.req.path;
  const headers = (built.req.headers ??= {});
  const content = signableContent(built);
  let unsignable = false;
  const sign = (over: { origin?: string; destination?: string; uri?: string; content?: unknown; key?: typeof F.key } = {}) => {
    try {
      return signRequest(
        { method: built.req.method, uri: over.uri ?? uri, origin: over.origin ?? F.name, destination: over.destination ?? A.name, content: 'content' in over ? over.content : content },
        over.key ?? F.key,
      );
    } catch {
      // The content is not canonical JSON (a lone surrogate, a float): no server can sign
      // it, so F signs nothing and the request may be refused as unauthenticated.
      unsignable = true;
      return signRequest({ method: built.req.method, uri: over.uri ?? uri, origin: over.origin ?? F.name, destination: over.destination ?? A.name }, over.key ?? F.key);
    }
  };
  // A body over the limit is refused (413) before anything is read. Otherwise the request's
  // signature is judged before its body: an unsigned or forged request is 401 whatever it carries.
  const unauthorized = (why: string) => {
    const o = built.req.body !== undefined ? bodyOracle(built.req.body, A.peekd.config.maxFederationBodyBytes) : undefined;
    built.expect = o?.expect?.status.includes(413) ? o.expect : { why, status: [401], errcode: ['M_UNAUTHORIZED'] };
  };
  if (unsigned && m.kind !== 'xmatrix') {
    delete headers.authorization;
    unauthorized('an unsigned request');
    // The router refuses some paths and queries (no route, too long) before any check.
    if (m.kind === 'param' || m.kind === 'query') built.expect = { why: 'an unsigned request with a hostile path or query', status: FOUR_XX };
    return;
  }
  if (m.kind !== 'xmatrix') {
    headers.authorization = sign();
    const e = built.expect;
    // F signed content the server cannot parse (not UTF-8, nested too deep, …): the server
    // checks the signature as over no content, so it fails (401) before the body is judged.
    const unparsable = content !== undefined && e !== undefined && e.status.includes(400) && (e.errcode?.includes('M_NOT_JSON') || e.errcode?.includes('M_BAD_JSON'));
    if ((unsignable || unparsable) && e && !e.status.includes(401))
      built.expect = { why: `${e.why} (content no server can sign or check)`, status: [...e.status, 401], errcode: e.errcode ? [...e.errcode, 'M_UNAUTHORIZED'] : undefined };
    return;
  }
  const good = sign();
  const sig = /sig="([^"]*)"/.exec(good)?.[1] ?? '';
  switch (m.variant) {
    case 'none':
      delete headers.authorization;
      break;
    case 'garbage':
      headers.authorization = 'X-Matrix garbage';
      break;
    case 'wrong-destination':
      headers.authorization = sign({ destination: G.name });
      break;
    case 'wrong-key':
      headers.authorization = sign({ key: otherKeyWithFsId() });
      break;
    case 'other-server-key':
      headers.authorization = sign({ key: G.key });
      break;
    case 'tampered-uri':
      headers.authorization = sign({ uri: `${uri}x` });
      break;
    case 'tampered-body':
      headers.authorization = sign({ content: { tampered: true } });
      break;
    case 'self-origin':
      headers.authorization = sign({ origin: A.name });
      break;
    case 'bad-origin':
      headers.authorization = good.replace(`origin="${F.name}"`, 'origin="bad host"');
      break;
    case 'unknown-key-id':
      headers.authorization = good.replace(`key="${F.key.keyId}"`, 'key="ed25519:nope"');
      break;
    case 'unreachable-origin':
      headers.authorization = sign({ origin: 'unreachable.test' });
      break;
    case 'huge':
      headers.authorization = `${good},pad="${'p'.repeat(20_000)}"`;
      break;
    case 'raw':
      headers.authorization = m.raw ?? '';
      break;
    case 'origin':
      headers.authorization = `X-Matrix origin=${m.origin},destination="${A.name}",key="${F.key.keyId}",sig="${sig}"`;
      break;
  }
  if (m.variant === 'huge') built.expect = { why: 'a 20 KB Authorization header', status: [400, 401, 431], errcode: ['M_TOO_LARGE', 'M_UNAUTHORIZED', 'M_UNKNOWN'] };
  else unauthorized(`X-Matrix ${m.variant}`);
}

/** A key F never published, under the ID of the one it did. */
function otherKeyWithFsId() {
  return generateSigningKey(F.key.keyId.slice('ed25519:'.length));
}

/** What F signs as the content: the body as JSON.parse reads it, when it is JSON. */
function signableContent(built: BuiltRequest): unknown {
  if (built.req.body === undefined || built.req.body.length === 0) return undefined;
  if (built.parsed !== undefined) return built.parsed;
  try {
    return JSON.parse(built.req.body.toString('utf8'));
  } catch {
    return undefined;
  }
}

beforeAll(async () => {
  fed = await startFederation({
    servers: 1,
    fakes: 2,
    env: {
      PEEKD_INBOUND_RENEWAL_INTERVAL_MS: String(RENEWAL_MS),
      PEEKD_OUTBOUND_IDLE_MS: String(RENEWAL_MS),
    },
    // A name whose keys cannot be fetched (connection refused at once).
    extraDestinations: { 'unreachable.test': 'http://127.0.0.1:1' },
  });
  [A] = fed.servers as [FedServer];
  [F, G] = fed.fakes as [FakeServer, FakeServer];
  http = new HostileHttp(A.url);
  ctx = {
    http,
    ledger,
    writes: new WriteCounter(() => A.peekd),
    gen: genContext(),
    bodyLimit: A.peekd.config.maxFederationBodyBytes,
    clientEdgeNul: false,
    authorize,
  };
  alice = await TestUser.register(A.url, 'alice');
  hostedRoom = (await alice.createWorldReadableRoom({ name: 'hostile hosted', room_alias_name: 'hostile-hosted' })).room_id;
  hostedAlias = `#hostile-hosted:${A.name}`;
  hostedMessage = await alice.send(hostedRoom, 'hello');
  hostedEventsBefore = (await alice.messages(hostedRoom, 1000)).map((e) => e.event_id).sort();
  const live = await F.send(A.name, 'PUT', peekPath(hostedRoom, 'live1'), {});
  if (live.status !== 200) throw new Error(`PUT peek: ${live.status} ${JSON.stringify(live.body)}`);
  peekLedger.starts++;
  peekLedger.live.add('live1');

  // A peeks a room F hosts, so F's PDUs for it are accepted.
  remote = new FakeRoom(F);
  F.handler = (r) => {
    if (r.method === 'PUT' && r.uri.startsWith(`${FED}/peek/${encodeURIComponent(remote.roomId)}/`)) return { status: 200, body: remote.snapshot(RENEWAL_MS) };
    return undefined;
  };
  const peek = await alice.peek(remote.roomId, { servers: [F.name] });
  if (peek.status !== 200) throw new Error(`peek of the remote room: ${peek.status} ${JSON.stringify(peek.body)}`);
  for (const e of remote.events) remoteBefore.add(e.id);
}, 120_000);

afterAll(async () => {
  printLedger(ledger, 'federation and key API', 'hostile.federation');
  http?.close();
  await fed?.cleanup();
});

describe('the endpoint table', () => {
  it('every baseline request succeeds, so the generators mutate requests that would pass', async () => {
    const failures = await baselineFailures(table, ctx, (ep, res) => [
      ...(ok(res) ? [] : [`${res.status} ${res.text.slice(0, 300)}`]),
      ...(ep.name.includes('a room A peeks') && acceptedPdus(res).length !== 1 ? [`the PDU was not accepted: ${res.text.slice(0, 300)}`] : []),
    ]);
    expect(failures).toEqual([]);
  });
});

describe('hostile input per endpoint, signed by F', () => {
  for (const ep of table) {
    it(
      ep.name,
      async () => {
        const failures = await attackEndpoint(ep, ctx, (kind) => (kind === 'custom' ? PDU_RUNS : kind === 'param' || kind === 'xmatrix' ? PARAM_RUNS : RUNS), 8_000 * SCALE);
        if (failures.length > 0) throw new Error(formatFailures(failures));
      },
      120_000 * SCALE,
    );
  }
});

describe('per-kind sweep across all endpoints', () => {
  const kinds: MutationKind[] = ['bytes', 'invalidUtf8', 'notJson', 'nonObject', 'fieldType', 'oddString', 'missing', 'huge', 'deep', 'dupKeys', 'values', 'contentType', 'query', 'xmatrix', 'custom'];
  const segClasses: SegClass[][] = [
    ['overlong', 'veryLong'],
    ['malformed', 'empty'],
    ['badEncoding', 'rawBytes'],
    ['nul', 'traversal', 'random'],
  ];
  const sweeps: { label: string; kind: MutationKind; classes?: SegClass[]; unsigned?: boolean }[] = [
    ...kinds.map((kind) => ({ label: kind, kind })),
    ...segClasses.map((classes) => ({ label: `param: ${classes.join(', ')}`, kind: 'param' as const, classes })),
    // The same requests without a signature: refused as unauthenticated unless the body is refused first.
    ...(['bytes', 'notJson', 'nonObject', 'fieldType', 'huge', 'deep', 'custom', 'param', 'query'] as MutationKind[]).map((kind) => ({ label: `unsigned: ${kind}`, kind, unsigned: true })),
  ];
  for (const sweep of sweeps) {
    it(
      sweep.label,
      async () => {
        const eps = table.filter((e) => !sweep.unsigned || e.auth === 'server');
        unsigned = sweep.unsigned ?? false;
        try {
          const f = await sweepKind(sweep.label, eps, sweep.kind, ctx, { ...genContext(), segClasses: sweep.classes }, { numRuns: SWEEP_RUNS, timeLimitMs: 15_000 * SCALE });
          if (f) throw new Error(formatFailures([f]));
        } finally {
          unsigned = false;
        }
      },
      120_000 * SCALE,
    );
  }
});

describe('never a partial write', () => {
  it('the inbound peeks and their audit match the accepted peek requests; the hosted room is untouched; the peeked room holds exactly the accepted PDUs', async () => {
    await projectionsCaughtUp(A.peekd);
    const rows = await inboundPeeks(A, hostedRoom);
    expect(rows.filter((r) => r.serverName !== F.name)).toEqual([]);
    expect(rows.map((r) => r.peekId).sort()).toEqual([...peekLedger.live].sort());

    const audit = (await auditRows(A, hostedRoom)).filter((r) => r.kind === 'inbound');
    expect(audit.filter((r) => r.serverName !== F.name)).toEqual([]);
    expect(audit.filter((r) => r.eventType === 'PeekStarted' || r.eventType === 'PeekRenewed').length).toBe(peekLedger.starts + peekLedger.renews);
    expect(audit.filter((r) => r.eventType === 'PeekExpired').map((r) => r.reason)).toEqual(Array(peekLedger.deletes).fill('remote_deleted'));

    expect((await alice.messages(hostedRoom, 1000)).map((e) => e.event_id).sort()).toEqual(hostedEventsBefore);

    const stored = await A.peekd.database.db.select({ eventId: syncapiRoomEvents.eventId }).from(syncapiRoomEvents).where(eq(syncapiRoomEvents.roomId, remote.roomId));
    const known = new Set([...remoteBefore, ...remoteAccepted]);
    expect(stored.map((r) => r.eventId).filter((id) => !known.has(id))).toEqual([]);
    expect([...remoteAccepted].filter((id) => !stored.some((r) => r.eventId === id))).toEqual([]);
  }, 60_000);

  it('over the whole sweep: no 5xx, no answer missing, no row written by a refused request', () => {
    expect({ fiveXx: ledger.fiveXx, noAnswer: ledger.noAnswer, rowsWrittenByRefused: ledger.rowsWrittenByRefused }).toEqual({ fiveXx: 0, noAnswer: 0, rowsWrittenByRefused: 0 });
  });
});
