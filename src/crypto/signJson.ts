/**
 * Signing and verifying JSON objects (spec appendix "Signing JSON").
 */
import { decodeBase64ToBuffer, encodeBase64Unpadded } from './base64.ts';
import { canonicalJson, utf8Bytes } from './canonicalJson.ts';
import { defaultEd25519, type Ed25519 } from './ed25519.ts';
import type { SigningKey } from './signingKey.ts';

/** `{ <entity>: { <key id>: <unpadded base64 signature> } }` */
export type Signatures = Record<string, Record<string, string>>;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A shallow copy of `obj` without `signatures` and `unsigned`: the signed part. */
export function signableJson(obj: object): Record<string, unknown> {
  const { signatures: _s, unsigned: _u, ...rest } = obj as Record<string, unknown>;
  return rest;
}

/**
 * Signs `obj` as `serverName` with `key`. Returns a new object: `obj`'s
 * fields, `unsigned` untouched, and `signatures` = the existing signatures with
 * this one merged in. `obj` itself is not modified.
 *
 * @throws {CanonicalJsonError} if the signed part is not representable as canonical JSON.
 */
export function signJson<T extends object>(obj: T, serverName: string, key: SigningKey, ed: Ed25519 = defaultEd25519): T & { signatures: Signatures } {
  const source = obj as Record<string, unknown>;
  const existing = source['signatures'];
  if (existing !== undefined && !isPlainObject(existing)) {
    throw new TypeError('existing "signatures" must be an object');
  }
  const signature = encodeBase64Unpadded(ed.sign(key.seed, utf8Bytes(canonicalJson(signableJson(obj)))));

  const signatures: Signatures = {};
  if (existing !== undefined) {
    for (const [entity, sigs] of Object.entries(existing)) {
      signatures[entity] = isPlainObject(sigs) ? ({ ...sigs } as Record<string, string>) : (sigs as Record<string, string>);
    }
  }
  const forServer = signatures[serverName];
  signatures[serverName] = Object.hasOwn(signatures, serverName) && isPlainObject(forServer) ? { ...forServer, [key.keyId]: signature } : { [key.keyId]: signature };
  return { ...obj, signatures } as T & { signatures: Signatures };
}

/**
 * Returns the signature `serverName` made with `keyId` on `obj`, or undefined
 * if there is none (or the `signatures` structure is malformed).
 */
export function getSignature(obj: object, serverName: string, keyId: string): string | undefined {
  const signatures = (obj as Record<string, unknown>)['signatures'];
  if (!isPlainObject(signatures) || !Object.hasOwn(signatures, serverName)) return undefined;
  const forServer = signatures[serverName];
  if (!isPlainObject(forServer) || !Object.hasOwn(forServer, keyId)) return undefined;
  const sig = forServer[keyId];
  return typeof sig === 'string' ? sig : undefined;
}

/**
 * Checks `serverName`'s signature with `keyId` on `obj` against `publicKey`.
 * False when the signature is missing, not base64, does not verify, or `obj`
 * is not representable as canonical JSON. Never throws.
 */
export function verifyJsonSignature(obj: object, serverName: string, keyId: string, publicKey: Uint8Array, ed: Ed25519 = defaultEd25519): boolean {
  if (!isPlainObject(obj)) return false;
  if (getSignature(obj, serverName, keyId) === undefined) return false;
  let signedJson: string;
  try {
    signedJson = canonicalJson(signableJson(obj));
  } catch {
    return false;
  }
  return verifySignatureOver(obj, signedJson, serverName, keyId, publicKey, ed);
}

/**
 * Checks `serverName`'s signature with `keyId` in `obj.signatures` against
 * `signedJson`, the canonical JSON text it should cover (the caller has built it:
 * for a PDU, from the redacted event). False when the signature is missing, not
 * base64 or does not verify. Never throws.
 */
export function verifySignatureOver(obj: object, signedJson: string, serverName: string, keyId: string, publicKey: Uint8Array, ed: Ed25519 = defaultEd25519): boolean {
  const encoded = getSignature(obj, serverName, keyId);
  if (encoded === undefined) return false;
  let signature: Uint8Array;
  try {
    signature = decodeBase64ToBuffer(encoded);
  } catch {
    return false;
  }
  return ed.verify(publicKey, utf8Bytes(signedJson), signature);
}
