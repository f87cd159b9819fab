// Fake peeking servers for the federation scenario, in their own process: tiny node:http
// servers that serve a self-signed key at /_matrix/key/v2/server, sign their PUT /peek
// requests with it (src/crypto), and otherwise verify nothing — they count the PDUs that
// arrive in PUT /send and answer 200.
import http from 'node:http';
import { canonicalJson, encodeBase64Unpadded, generateSigningKey, signJson, signRequest, type SigningKey } from '../src/crypto/index.ts';
import { freePort } from '../src/nats/freePorts.ts';
import { commonHandlers, pool } from './childCommon.ts';
import { serveIpc } from './ipc.ts';

interface Peer {
  name: string;
  url: string;
  key: SigningKey;
  server: http.Server;
  keyBody: string;
  pdus: number;
  txns: number;
  /** hrtime (ns) when `pdus` first reached the target. */
  reachedAt?: bigint;
}

const peers: Peer[] = [];
let target = Infinity;
let destination = { name: '', url: '' };
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

async function startPeer(name: string): Promise<Peer> {
  const key = generateSigningKey();
  const port = await freePort();
  const keyBody = JSON.stringify(
    signJson({ server_name: name, verify_keys: { [key.keyId]: { key: encodeBase64Unpadded(key.publicKey) } }, old_verify_keys: {}, valid_until_ts: Date.now() + 86_400_000 }, name, key),
  );
  const peer: Peer = { name, url: `http://127.0.0.1:${port}`, key, server: undefined as unknown as http.Server, keyBody, pdus: 0, txns: 0 };
  peer.server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      if (req.method === 'GET' && url.startsWith('/_matrix/key/v2/server')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(peer.keyBody);
        return;
      }
      if (req.method === 'PUT' && url.startsWith('/_matrix/federation/v1/send/')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { pdus?: unknown[] };
        peer.txns++;
        peer.pdus += body.pdus?.length ?? 0;
        if (peer.reachedAt === undefined && peer.pdus >= target) peer.reachedAt = process.hrtime.bigint();
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"pdus":{}}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  peer.server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => peer.server.listen(port, '127.0.0.1', () => resolve()));
  return peer;
}

/** A signed federation request from `peer` to the peekd under test; latency in ms. */
function signedRequest(peer: Peer, method: string, uri: string, content?: unknown): Promise<{ status: number; bytes: number; ms: number; text: string }> {
  const authorization = signRequest({ method, uri, origin: peer.name, destination: destination.name, content }, peer.key);
  const body = content === undefined ? undefined : Buffer.from(canonicalJson(content));
  const u = new URL(uri, destination.url);
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: u.hostname,
        port: u.port,
        method,
        path: uri,
        headers: { authorization, ...(body ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, bytes: buf.length, ms: Number(process.hrtime.bigint() - t0) / 1e6, text: res.statusCode === 200 ? '' : buf.toString('utf8').slice(0, 300) });
        });
      },
    );
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

serveIpc({
  ...commonHandlers(async () => {
    for (const p of peers) p.server.closeAllConnections();
    await Promise.all(peers.map((p) => new Promise((r) => p.server.close(r))));
  }),

  start: async ({ count, tag }: { count: number; tag: string }) => {
    for (let i = 0; i < count; i++) peers.push(await startPeer(`p${i}-${tag}.bench`));
    return peers.map((p) => ({ name: p.name, url: p.url }));
  },

  target: ({ name, url }: { name: string; url: string }) => {
    destination = { name, url };
    return true;
  },

  /**
   * PUT /peek/{roomId}/{peekId}?ver=10 from peers [from, to), `perPeer` times each (distinct
   * peek IDs), `concurrency` at a time; returns each request's latency, status and size.
   */
  peek: async ({ roomId, from, to, perPeer = 1, idPrefix = 'b', concurrency = 1 }: { roomId: string; from: number; to: number; perPeer?: number; idPrefix?: string; concurrency?: number }) => {
    const jobs: { peer: Peer; peekId: string }[] = [];
    for (let r = 0; r < perPeer; r++) for (let i = from; i < to; i++) jobs.push({ peer: peers[i]!, peekId: `${idPrefix}${r}` });
    return pool(jobs, concurrency, async ({ peer, peekId }) => {
      const uri = `/_matrix/federation/v1/peek/${encodeURIComponent(roomId)}/${encodeURIComponent(peekId)}?ver=10`;
      return signedRequest(peer, 'PUT', uri, {});
    });
  },

  /** From now on, record when each peer has received `count` PDUs (counting from zero again). */
  expect: ({ count }: { count: number }) => {
    target = count;
    for (const p of peers) {
      p.pdus = 0;
      p.txns = 0;
      p.reachedAt = undefined;
    }
    return true;
  },

  counts: () => ({
    pdus: peers.map((p) => p.pdus),
    txns: peers.reduce((a, p) => a + p.txns, 0),
    reached: peers.filter((p) => p.reachedAt !== undefined).length,
    lastReachedAt: peers.reduce<bigint>((a, p) => (p.reachedAt !== undefined && p.reachedAt > a ? p.reachedAt : a), 0n).toString(),
  }),
});
