// Signature verifications per CPU-second: peekd's verifiers (src/crypto, as the federation
// code calls them) against the raw primitives they stand on (node:crypto's Ed25519 with
// a prepared key object, and tweetnacl), on the same realistic PDU / request.
import { createPublicKey, verify as nodeVerify } from 'node:crypto';
import nacl from 'tweetnacl';
import {
  buildRequestSigningJson,
  canonicalJsonBytes,
  decodeBase64,
  defaultEd25519,
  generateSigningKey,
  hashAndSignPdu,
  parseXMatrixHeader,
  redactPdu,
  signableJson,
  signRequest,
  verifyPduSignature,
  verifyRequestSignature,
} from '../src/crypto/index.ts';
import { checkPdu } from '../src/federation/verifyPdu.ts';
import type { KeyRing } from '../src/federation/keyRing.ts';

/**
 * Rates of several functions measured together: short slices of each in turn for
 * `durationMs` in all, so drift in what else the machine does hits them all alike; and
 * per second of this process's CPU time (getrusage), not of wall time, so the other
 * processes sharing the cores do not skew the ratio.
 */
function rates<K extends string>(durationMs: number, fns: Record<K, () => boolean>): Record<K, { ops: number; perSecond: number; allTrue: boolean }> {
  const keys = Object.keys(fns) as K[];
  const acc = Object.fromEntries(keys.map((k) => [k, { ops: 0, cpuUs: 0, allTrue: true }])) as Record<K, { ops: number; cpuUs: number; allTrue: boolean }>;
  // Warm up (JIT, key caches): 50 ms each.
  for (const k of keys) {
    const end = Date.now() + 50;
    while (Date.now() < end) fns[k]();
  }
  const sliceNs = 20_000_000n;
  const gc = (globalThis as { gc?: () => void }).gc;
  const end = process.hrtime.bigint() + BigInt(durationMs) * 1_000_000n;
  while (process.hrtime.bigint() < end) {
    for (const k of keys) {
      const fn = fns[k];
      const a = acc[k];
      // No slice pays for the garbage the one before it left (tweetnacl makes plenty).
      if (keys.length > 1) gc?.();
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      let t = t0;
      while (t - t0 < sliceNs) {
        for (let i = 0; i < 10; i++) a.allTrue = fn() && a.allTrue;
        a.ops += 10;
        t = process.hrtime.bigint();
      }
      const c = process.cpuUsage(c0);
      a.cpuUs += c.user + c.system;
    }
  }
  return Object.fromEntries(keys.map((k) => [k, { ops: acc[k].ops, perSecond: acc[k].ops / (acc[k].cpuUs / 1e6), allTrue: acc[k].allTrue }])) as Record<
    K,
    { ops: number; perSecond: number; allTrue: boolean }
  >;
}

/**
 * `only`: run just that one (for a profile of where its time goes); otherwise all of them
 * interleaved for `durationMs` × 6.
 */
export async function verifyBench({ durationMs = 2000, only }: { durationMs?: number; only?: string }) {
  const server = 'origin.bench';
  const key = generateSigningKey();
  const id = (c: string) => `$${c.repeat(43)}`;
  const pdu = hashAndSignPdu(
    {
      type: 'm.room.message',
      room_id: `!abcdefghijklmnopqr:${server}`,
      sender: `@alice:${server}`,
      content: { msgtype: 'm.text', body: 'A message of ordinary length, about as long as people write them in a chat room.' },
      origin_server_ts: 1_764_000_000_000,
      depth: 1234,
      prev_events: [id('P')],
      auth_events: [id('A'), id('B'), id('C')],
    },
    server,
    key,
  );
  // The exact bytes the signature covers, and the signature, prepared once for the raw rates.
  const message = canonicalJsonBytes(signableJson(redactPdu(pdu)));
  const signature = decodeBase64(pdu.signatures[server]![key.keyId]!);
  const keyObject = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), key.publicKey]), format: 'der', type: 'spki' });

  const uri = `/_matrix/federation/v1/peek/${encodeURIComponent(pdu.room_id)}/abcdefgh?ver=10`;
  const auth = parseXMatrixHeader(signRequest({ method: 'PUT', uri, origin: server, destination: 'peekd.bench', content: {} }, key))!;
  const reqMessage = canonicalJsonBytes(buildRequestSigningJson({ method: 'PUT', uri, origin: server, destination: 'peekd.bench', content: {} }));
  const reqSignature = decodeBase64(auth.sig);

  const keyRing = { eventKey: async () => key.publicKey, requestKey: async () => key.publicKey } as unknown as KeyRing;

  const all = {
    nodeNative: () => nodeVerify(null, message, keyObject, signature),
    tweetnacl: () => nacl.sign.detached.verify(message, signature, key.publicKey),
    // peekd's Ed25519 wrapper on the prepared bytes (argument checks, key-object cache).
    peekdPrimitive: () => defaultEd25519.verify(key.publicKey, message, signature),
    // verifyPduSignature: redact, canonical JSON, base64, verify — the PDU verifier.
    peekdPduVerifier: () => verifyPduSignature(pdu, server, key.keyId, key.publicKey),
    // verifyRequestSignature: the X-Matrix request verifier.
    peekdRequestVerifier: () => verifyRequestSignature({ method: 'PUT', uri, origin: server, destination: 'peekd.bench', content: {} }, auth, key.publicKey),
    nodeNativeRequest: () => nodeVerify(null, reqMessage, keyObject, reqSignature),
  };
  if (only) {
    const fn = all[only as keyof typeof all];
    if (!fn) throw new Error(`unknown verifier ${only}`);
    return rates(durationMs, { [only]: fn });
  }
  const r = rates(durationMs * 6, all);
  for (const [k, v] of Object.entries(r)) if (!v.allTrue) throw new Error(`${k} did not verify the good signature`);
  const out = { messageBytes: message.length, pduBytes: JSON.stringify(pdu).length, ...r, checkPduPerSecond: 0 };
  // checkPdu (content hash + signature + event ID, what /send and snapshots run) is async: count it apart.
  {
    for (let i = 0; i < 100; i++) await checkPdu(pdu, '10', keyRing);
    let n = 0;
    const c0 = process.cpuUsage();
    const end = Date.now() + durationMs;
    while (Date.now() < end) {
      for (let i = 0; i < 50; i++) if ((await checkPdu(pdu, '10', keyRing)).ok) n++;
    }
    const c = process.cpuUsage(c0);
    out.checkPduPerSecond = n / ((c.user + c.system) / 1e6);
  }
  return out;
}
