// Signature verifications per second: peekd's verifiers (src/crypto, as the federation
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
} from '../src/crypto';
import { checkPdu } from '../src/federation/verifyPdu';
import type { KeyRing } from '../src/federation/keyRing';

function rate(durationMs: number, fn: () => boolean): { ops: number; perSecond: number; allTrue: boolean } {
  // Warm up (JIT, key caches), then count whole batches until the time is up.
  for (let i = 0; i < 200; i++) fn();
  let ops = 0;
  let allTrue = true;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(durationMs) * 1_000_000n;
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 50; i++) allTrue = fn() && allTrue;
    ops += 50;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { ops, perSecond: ops / seconds, allTrue };
}

export async function verifyBench({ durationMs = 2000 }: { durationMs?: number }) {
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

  const out = {
    messageBytes: message.length,
    pduBytes: JSON.stringify(pdu).length,
    nodeNative: rate(durationMs, () => nodeVerify(null, message, keyObject, signature)),
    tweetnacl: rate(durationMs, () => nacl.sign.detached.verify(message, signature, key.publicKey)),
    /** peekd's Ed25519 wrapper on the prepared bytes (argument checks, key-object cache). */
    peekdPrimitive: rate(durationMs, () => defaultEd25519.verify(key.publicKey, message, signature)),
    /** verifyPduSignature: redact, canonical JSON, base64, verify — the PDU verifier. */
    peekdPduVerifier: rate(durationMs, () => verifyPduSignature(pdu, server, key.keyId, key.publicKey)),
    /** verifyRequestSignature: the X-Matrix request verifier. */
    peekdRequestVerifier: rate(durationMs, () => verifyRequestSignature({ method: 'PUT', uri, origin: server, destination: 'peekd.bench', content: {} }, auth, key.publicKey)),
    nodeNativeRequest: rate(durationMs, () => nodeVerify(null, reqMessage, keyObject, reqSignature)),
    checkPduPerSecond: 0,
  };
  // checkPdu (content hash + signature + event ID, what /send and snapshots run) is async: count it apart.
  {
    for (let i = 0; i < 100; i++) await checkPdu(pdu, '10', keyRing);
    let n = 0;
    const t0 = process.hrtime.bigint();
    const end = Date.now() + durationMs;
    while (Date.now() < end) {
      for (let i = 0; i < 50; i++) if ((await checkPdu(pdu, '10', keyRing)).ok) n++;
    }
    out.checkPduPerSecond = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return out;
}
