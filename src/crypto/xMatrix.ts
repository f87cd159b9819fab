/**
 * Federation request authentication: the `X-Matrix` Authorization scheme
 * (server-server API, "Request Authentication").
 */
import { decodeBase64ToBuffer } from './base64.ts';
import { canonicalJson, utf8Bytes } from './canonicalJson.ts';
import { defaultEd25519, type Ed25519 } from './ed25519.ts';
import { signJson } from './signJson.ts';
import type { SigningKey } from './signingKey.ts';

export interface FederationRequest {
  /** HTTP method, upper case, e.g. `PUT`. */
  method: string;
  /** Request target: path and query, e.g. `/_matrix/federation/v1/send/123?x=1`. */
  uri: string;
  /** Sending server name. */
  origin: string;
  /** Receiving server name. */
  destination: string;
  /** Parsed JSON body; omitted from the signed object when undefined. */
  content?: unknown;
}

export interface XMatrixAuth {
  origin: string;
  destination?: string;
  /** Key ID, e.g. `ed25519:a_AbCd`. */
  key: string;
  /** Unpadded base64 signature. */
  sig: string;
}

/** The JSON object whose signature goes in the Authorization header. */
export function buildRequestSigningJson(req: FederationRequest): Record<string, unknown> {
  const json: Record<string, unknown> = {
    method: req.method,
    uri: req.uri,
    origin: req.origin,
    destination: req.destination,
  };
  if (req.content !== undefined) json['content'] = req.content;
  return json;
}

function quote(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Signs `req` and returns the full `Authorization` header value. */
export function signRequest(req: FederationRequest, key: SigningKey, ed: Ed25519 = defaultEd25519): string {
  const signed = signJson(buildRequestSigningJson(req), req.origin, key, ed);
  const sig = signed.signatures[req.origin]?.[key.keyId] as string;
  return `X-Matrix origin=${quote(req.origin)},destination=${quote(req.destination)},` + `key=${quote(key.keyId)},sig=${quote(sig)}`;
}

// RFC 9110 token characters.
const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t';
}

/**
 * Parses an `X-Matrix` Authorization header value (RFC 9110 section 11.4
 * auth-params): scheme and parameter names case-insensitive, parameters in
 * any order, values quoted (with backslash escapes) or bare tokens,
 * whitespace around `,` and `=` tolerated, unknown parameters ignored.
 * Returns null when the header is not `X-Matrix`, is malformed, repeats a
 * parameter, or lacks a non-empty origin, key or sig.
 */
export function parseXMatrixHeader(value: string): XMatrixAuth | null {
  if (typeof value !== 'string') return null;
  const m = /^[ \t]*x-matrix[ \t]+/i.exec(value);
  if (m === null) return null;
  const params = new Map<string, string>();
  let i = m[0].length;
  const n = value.length;

  for (;;) {
    // Separators: any run of whitespace and commas (empty list elements are allowed).
    while (i < n && (isSpace(value[i]) || value[i] === ',')) i++;
    if (i >= n) break;

    const nameStart = i;
    while (i < n && TOKEN_CHAR.test(value[i] as string)) i++;
    if (i === nameStart) return null;
    const name = value.slice(nameStart, i).toLowerCase();
    while (i < n && isSpace(value[i])) i++;
    if (value[i] !== '=') return null;
    i++;
    while (i < n && isSpace(value[i])) i++;

    let paramValue = '';
    if (value[i] === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const c = value[i] as string;
        if (c === '\\') {
          if (i + 1 >= n) return null;
          paramValue += value[i + 1];
          i += 2;
        } else if (c === '"') {
          i++;
          closed = true;
          break;
        } else {
          paramValue += c;
          i++;
        }
      }
      if (!closed) return null;
    } else {
      // Bare value: be lenient and take everything up to a separator.
      const valueStart = i;
      while (i < n && value[i] !== ',' && !isSpace(value[i]) && value[i] !== '"') i++;
      paramValue = value.slice(valueStart, i);
    }

    if (params.has(name)) return null;
    params.set(name, paramValue);

    while (i < n && isSpace(value[i])) i++;
    if (i < n && value[i] !== ',') return null;
  }

  const origin = params.get('origin');
  const key = params.get('key');
  const sig = params.get('sig');
  if (!origin || !key || !sig) return null;
  const destination = params.get('destination');
  const auth: XMatrixAuth = { origin, key, sig };
  // Present but empty stays present: only a header without the parameter is an older server's.
  if (destination !== undefined) auth.destination = destination;
  return auth;
}

/**
 * Verifies a parsed X-Matrix header against the request as received. `req`
 * carries the receiver's view: `destination` is the receiving server's own
 * name and `origin` the server the request claims to be from. False when the
 * header's origin differs from `req.origin`, its destination (if present)
 * differs from `req.destination`, the key is not ed25519, or the signature
 * does not verify. Never throws.
 */
export function verifyRequestSignature(req: FederationRequest, header: XMatrixAuth, publicKey: Uint8Array, ed: Ed25519 = defaultEd25519): boolean {
  if (header.origin !== req.origin) return false;
  if (header.destination !== undefined && header.destination !== req.destination) return false;
  if (!header.key.startsWith('ed25519:')) return false;
  let message: Uint8Array;
  let signature: Uint8Array;
  try {
    signature = decodeBase64ToBuffer(header.sig);
    message = utf8Bytes(canonicalJson(buildRequestSigningJson(req)));
  } catch {
    return false;
  }
  return ed.verify(publicKey, message, signature);
}
