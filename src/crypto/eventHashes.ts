/**
 * Event (PDU) hashing, redaction, event IDs and event signatures.
 *
 * PDUs here are the federation format for room versions 3+ (no `event_id`);
 * the default room version is 10. Redaction follows the spec's per-version
 * algorithms for room versions 1 to 10.
 */
import { createHash } from 'node:crypto';
import { decodeBase64ToBuffer, encodeBase64Unpadded, encodeBase64UrlUnpadded } from './base64.ts';
import { canonicalJson, canonicalJsonBytes, canonicalJsonOrUndefined, compareCodePoints } from './canonicalJson.ts';
import { defaultEd25519, type Ed25519 } from './ed25519.ts';
import { signJson, verifyJsonSignature, verifySignatureOver, type Signatures } from './signJson.ts';
import type { SigningKey } from './signingKey.ts';

/** A PDU as a JSON object. Only the fields this module reads are typed. */
export type Pdu = Record<string, unknown>;

/** Thrown for a room version this module has no rules for. */
export class UnsupportedRoomVersionError extends Error {
  override readonly name = 'UnsupportedRoomVersionError';
  constructor(readonly roomVersion: string) {
    super(`unsupported room version ${JSON.stringify(roomVersion)}`);
  }
}

export const REDACTION_ROOM_VERSIONS: readonly string[] = Object.freeze(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);

function roomVersionNumber(roomVersion: string): number {
  if (!REDACTION_ROOM_VERSIONS.includes(roomVersion)) throw new UnsupportedRoomVersionError(roomVersion);
  return Number(roomVersion);
}

/**
 * Whether an event of this room version may only be verified with a key whose
 * `valid_until_ts` (capped at seven days after it was fetched) is not before the event's
 * `origin_server_ts`: room versions 5 and later ("Signing key validity period"). Unknown
 * versions are held to it too.
 */
export function enforcesKeyValidity(roomVersion: string): boolean {
  const n = Number(roomVersion);
  return !(Number.isInteger(n) && n >= 1 && n <= 4);
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

function sha256OfText(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function omit(obj: object, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...(obj as Record<string, unknown>) };
  for (const k of keys) delete out[k];
  return out;
}

// ---------------------------------------------------------------- content hash

/** Unpadded base64 sha256 of the canonical event without `unsigned`, `signatures`, `hashes`. */
export function computeContentHash(pdu: object): string {
  return encodeBase64Unpadded(contentHashBytes(pdu));
}

function contentHashBytes(pdu: object): Buffer {
  return sha256OfText(canonicalJson(omit(pdu, ['unsigned', 'signatures', 'hashes'])));
}

/** A copy of `pdu` with `hashes: { sha256: <content hash> }`. */
export function withContentHash<T extends object>(pdu: T): T & { hashes: { sha256: string } } {
  return { ...pdu, hashes: { sha256: computeContentHash(pdu) } };
}

/** True iff `pdu.hashes.sha256` matches the content. Never throws. */
export function checkContentHash(pdu: object): boolean {
  const hashes = (pdu as Pdu)['hashes'];
  if (!isPlainObject(hashes) || typeof hashes['sha256'] !== 'string') return false;
  try {
    const expected = decodeBase64ToBuffer(hashes['sha256']);
    // Compared as bytes: decoding the hash's own base64 would give back these bytes.
    const actual = contentHashBytes(pdu);
    return expected.length === actual.length && actual.equals(expected);
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------- redaction

/** Top-level keys kept by redaction in room versions 1-10. */
const KEPT_TOP_LEVEL_V1_V10: readonly string[] = [
  'event_id',
  'type',
  'room_id',
  'sender',
  'state_key',
  'content',
  'hashes',
  'signatures',
  'depth',
  'prev_events',
  'prev_state',
  'auth_events',
  'origin',
  'origin_server_ts',
  'membership',
];

function keptContentKeys(type: unknown, v: number): readonly string[] {
  switch (type) {
    case 'm.room.member':
      return v >= 9 ? ['membership', 'join_authorised_via_users_server'] : ['membership'];
    case 'm.room.create':
      return ['creator'];
    case 'm.room.join_rules':
      return v >= 8 ? ['join_rule', 'allow'] : ['join_rule'];
    case 'm.room.power_levels':
      return ['ban', 'events', 'events_default', 'kick', 'redact', 'state_default', 'users', 'users_default'];
    case 'm.room.history_visibility':
      return ['history_visibility'];
    case 'm.room.aliases':
      return v <= 5 ? ['aliases'] : [];
    default:
      return [];
  }
}

/**
 * The redaction algorithm for room versions 1-10: returns a new, deep-copied
 * event with only the protected top-level keys and the protected content keys
 * for its type. `content` is always present (`{}` if the event had none).
 *
 * @throws {UnsupportedRoomVersionError} for other room versions.
 */
export function redactPdu<T extends object>(pdu: T, roomVersion = '10'): Pdu {
  const v = roomVersionNumber(roomVersion);
  const source = pdu as Pdu;
  const out: Pdu = {};
  for (const key of KEPT_TOP_LEVEL_V1_V10) {
    if (key !== 'content' && Object.hasOwn(source, key)) out[key] = source[key];
  }
  const content = source['content'];
  const newContent: Record<string, unknown> = {};
  if (isPlainObject(content)) {
    for (const key of keptContentKeys(source['type'], v)) {
      if (Object.hasOwn(content, key)) newContent[key] = content[key];
    }
  }
  out['content'] = newContent;
  return structuredClone(out);
}

/** The kept top-level keys but `signatures`, in canonical (code point) order. */
const SIGNED_TOP_LEVEL: readonly string[] = KEPT_TOP_LEVEL_V1_V10.filter((k) => k !== 'signatures').sort(compareCodePoints);

/**
 * Canonical JSON of the redacted `pdu` without `signatures` (redaction keeps no
 * `unsigned` or `age_ts`): the text the event's signatures cover and its reference hash
 * is taken of. Written straight from the PDU's own fields, without redactPdu's deep copy
 * or any intermediate object. Undefined when a kept field (`signatures` included) holds
 * anything but plain JSON data: the caller then takes the long way (redactPdu and
 * canonical JSON), which decides such an event exactly as it always has.
 */
function redactedSignedJson(source: Pdu, v: number): string | undefined {
  let out = '{';
  for (const key of SIGNED_TOP_LEVEL) {
    let json: string | undefined;
    if (key === 'content') json = redactedContentJson(source, v);
    else if (Object.hasOwn(source, key)) json = canonicalJsonOrUndefined(source[key]);
    else continue;
    if (json === undefined) return undefined;
    out += `${out.length > 1 ? ',' : ''}"${key}":${json}`;
  }
  // Not written, but redactPdu's structuredClone must get through it as well.
  if (Object.hasOwn(source, 'signatures') && canonicalJsonOrUndefined(source['signatures']) === undefined) return undefined;
  return `${out}}`;
}

/** The `content` of redactPdu's output as canonical JSON, or undefined (see redactedSignedJson). */
function redactedContentJson(source: Pdu, v: number): string | undefined {
  const content = source['content'];
  if (!isPlainObject(content)) return '{}';
  const keys = keptContentKeys(source['type'], v);
  if (keys.length === 0) return '{}';
  const kept = keys.filter((k) => Object.hasOwn(content, k)).sort(compareCodePoints);
  let out = '{';
  for (const key of kept) {
    const json = canonicalJsonOrUndefined(content[key]);
    if (json === undefined) return undefined;
    out += `${out.length > 1 ? ',' : ''}"${key}":${json}`;
  }
  return `${out}}`;
}

// ---------------------------------------------------- reference hash, event ID

/** sha256 of the canonical redacted event without `signatures`, `unsigned`, `age_ts`. */
export function referenceHash(pdu: object, roomVersion = '10'): Uint8Array {
  const signed = redactedSignedJson(pdu as Pdu, roomVersionNumber(roomVersion));
  if (signed !== undefined) return new Uint8Array(sha256OfText(signed));
  const redacted = omit(redactPdu(pdu, roomVersion), ['signatures', 'unsigned', 'age_ts']);
  return sha256(canonicalJsonBytes(redacted));
}

/**
 * The event ID of a room version 3+ PDU: `$` + the reference hash in URL-safe
 * unpadded base64 (v4+) or standard unpadded base64 (v3). Pass the PDU as it
 * travels over federation (no `event_id` key).
 */
export function eventIdForPdu(pdu: object, roomVersion = '10'): string {
  const v = roomVersionNumber(roomVersion);
  if (v < 3) throw new UnsupportedRoomVersionError(roomVersion); // v1/v2 event IDs are not hashes
  const hash = referenceHash(pdu, roomVersion);
  return `$${v === 3 ? encodeBase64Unpadded(hash) : encodeBase64UrlUnpadded(hash)}`;
}

// ---------------------------------------------------------------- signatures

/**
 * Signs the redacted form of `pdu` and returns a copy of the full `pdu` with
 * the signature merged into its `signatures`. Content hashes are not touched:
 * use {@link hashAndSignPdu} for a PDU that has no `hashes` yet.
 */
export function signPdu<T extends object>(pdu: T, serverName: string, key: SigningKey, ed: Ed25519 = defaultEd25519, roomVersion = '10'): T & { signatures: Signatures } {
  const signedRedacted = signJson(redactPdu(pdu, roomVersion), serverName, key, ed);
  return { ...pdu, signatures: signedRedacted.signatures };
}

/** {@link withContentHash} then {@link signPdu}: the full event-signing algorithm. */
export function hashAndSignPdu<T extends object>(
  pdu: T,
  serverName: string,
  key: SigningKey,
  ed: Ed25519 = defaultEd25519,
  roomVersion = '10',
): T & { hashes: { sha256: string }; signatures: Signatures } {
  return signPdu(withContentHash(pdu), serverName, key, ed, roomVersion);
}

/**
 * Verifies `serverName`'s signature with `keyId` over the redacted `pdu`.
 * Content outside the redacted form is protected by the content hash, not by
 * this signature: check that with {@link checkContentHash}. Never throws.
 */
export function verifyPduSignature(pdu: object, serverName: string, keyId: string, publicKey: Uint8Array, ed: Ed25519 = defaultEd25519, roomVersion = '10'): boolean {
  let signed: string | undefined;
  try {
    signed = redactedSignedJson(pdu as Pdu, roomVersionNumber(roomVersion));
  } catch {
    return false;
  }
  if (signed !== undefined) {
    // redactPdu copies `signatures` only when it is the PDU's own.
    if (!Object.hasOwn(pdu, 'signatures')) return false;
    return verifySignatureOver(pdu, signed, serverName, keyId, publicKey, ed);
  }
  let redacted: Pdu;
  try {
    redacted = redactPdu(pdu, roomVersion);
  } catch {
    return false;
  }
  return verifyJsonSignature(redacted, serverName, keyId, publicKey, ed);
}
