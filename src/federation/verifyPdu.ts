// Accepts a PDU received over federation only when its content hash and its sender's
// server signature both check out (peekd's wire contract; the specification would keep a
// PDU whose hash fails as its redacted copy, but a copy changed on the way is refused here,
// whatever it claims). Computes its event ID (reference hash).
import { checkContentHash, eventIdForPdu, verifyPduSignature } from '../crypto/index.ts';
import { serverOf } from '../events/ids.ts';
import type { Pdu } from '../events/roomEvents.ts';
import type { KeyRing } from './keyRing.ts';
import { MAX_PDU_BYTES, pduSize } from '../matrix/pduFactory.ts';
import { unstorableString } from '../matrix/storable.ts';

export type PduCheck = { ok: true; eventId: string; pdu: Pdu } | { ok: false; error: string };

/** Room version 10's bounds, as Synapse applies them. */
const MAX_PREV_EVENTS = 20;
const MAX_AUTH_EVENTS = 10;
const MAX_NAME_BYTES = 255;

const isName = (v: unknown, allowEmpty: boolean): v is string => typeof v === 'string' && (allowEmpty || v !== '') && Buffer.byteLength(v, 'utf8') <= MAX_NAME_BYTES;
const isIdList = (v: unknown, max: number): v is string[] => Array.isArray(v) && v.length <= max && v.every((id) => typeof id === 'string' && id.startsWith('$') && id.length <= MAX_NAME_BYTES);
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function isPduShape(v: unknown): v is Pdu {
  if (!isObject(v)) return false;
  const p = v as Partial<Pdu>;
  return (
    isName(p.type, false) &&
    isName(p.room_id, false) &&
    isName(p.sender, false) &&
    (p.state_key === undefined || isName(p.state_key, true)) &&
    (p.redacts === undefined || isName(p.redacts, false)) &&
    isObject(p.content) &&
    Number.isSafeInteger(p.depth) &&
    (p.depth as number) >= 1 &&
    Number.isSafeInteger(p.origin_server_ts) &&
    (p.origin_server_ts as number) >= 0 &&
    isIdList(p.prev_events, MAX_PREV_EVENTS) &&
    isIdList(p.auth_events, MAX_AUTH_EVENTS) &&
    isObject(p.hashes) &&
    typeof p.hashes.sha256 === 'string' &&
    isObject(p.signatures)
  );
}

export async function checkPdu(raw: unknown, roomVersion: string, keyRing: KeyRing): Promise<PduCheck> {
  if (!isPduShape(raw)) return { ok: false, error: 'not a PDU' };
  const pdu = raw;
  // Postgres cannot store U+0000 (nor a lone surrogate, which canonical JSON refuses
  // anyway); such an event could never be projected.
  const unstorable = unstorableString(pdu);
  if (unstorable) return { ok: false, error: `the PDU holds ${unstorable}, which is not supported` };
  // The Matrix size limit, checked before any key is fetched for it.
  let size: number;
  try {
    size = pduSize(pdu);
  } catch (err) {
    return { ok: false, error: `not canonical JSON: ${(err as Error).message}` };
  }
  if (size > MAX_PDU_BYTES) return { ok: false, error: `the PDU is ${size} bytes; the limit is ${MAX_PDU_BYTES}` };
  // The content hash first: it costs no key fetch. Content changed on the way (or an event
  // passed on in its redacted form) is refused, never kept in any form.
  if (!checkContentHash(pdu)) return { ok: false, error: 'the content does not match its hash (hashes.sha256)' };
  const server = serverOf(pdu.sender);
  const sigs = pdu.signatures[server];
  if (!sigs || typeof sigs !== 'object') return { ok: false, error: `no signature from ${server}` };
  let verified = false;
  for (const keyId of Object.keys(sigs)) {
    if (!keyId.startsWith('ed25519:')) continue;
    const key = await keyRing.eventKey(server, keyId, pdu.origin_server_ts, roomVersion);
    if (key && verifyPduSignature(pdu, server, keyId, key, undefined, roomVersion)) {
      verified = true;
      break;
    }
  }
  if (!verified) return { ok: false, error: `bad or unverifiable signature from ${server}` };
  let eventId: string;
  try {
    eventId = eventIdForPdu(pdu, roomVersion);
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  return { ok: true, eventId, pdu };
}
