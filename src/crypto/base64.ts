/**
 * Base64 helpers for Matrix: the spec's "unpadded Base64" (RFC 4648 standard
 * alphabet, no `=`), the URL-safe variant used by room v4+ event IDs, and a
 * tolerant-but-validating decoder.
 */

/** Thrown by {@link decodeBase64} for input that is not Base64. */
export class Base64Error extends Error {
  override readonly name = 'Base64Error';
}

/** Standard alphabet (`+`, `/`), without padding. */
export function encodeBase64Unpadded(bytes: Uint8Array): string {
  return stripPadding(toBuffer(bytes).toString('base64'));
}

/** URL-safe alphabet (`-`, `_`), without padding (RFC 4648 section 5). */
export function encodeBase64UrlUnpadded(bytes: Uint8Array): string {
  // Node's 'base64url' encoding never emits padding.
  return toBuffer(bytes).toString('base64url');
}

const STANDARD_OR_URL = /^[A-Za-z0-9+/_-]*$/;

/**
 * Decodes padded or unpadded Base64 in either the standard or the URL-safe
 * alphabet (but not a mixture of the two). Non-zero bits in the unused tail of
 * the last character are ignored, as most Base64 decoders (including Python's,
 * which produced several of the spec's test vectors) do. Whitespace is not
 * accepted.
 *
 * @throws {Base64Error} on any other malformed input.
 */
export function decodeBase64(s: string): Uint8Array {
  // Copy out of Node's shared buffer pool into a plain Uint8Array.
  return new Uint8Array(decodeBase64ToBuffer(s));
}

/**
 * {@link decodeBase64} without the copy: a Buffer that may be a view of Node's shared
 * pool, for bytes used at once (a signature about to be verified, a hash compared).
 */
export function decodeBase64ToBuffer(s: string): Buffer {
  if (typeof s !== 'string') throw new Base64Error('base64 input must be a string');
  let body = s;
  const firstPad = s.indexOf('=');
  if (firstPad !== -1) {
    const padding = s.length - firstPad;
    if (padding > 2 || !/^=+$/.test(s.slice(firstPad)) || s.length % 4 !== 0) {
      throw new Base64Error('invalid base64 padding');
    }
    body = s.slice(0, firstPad);
    // Padding must be exactly what the body length calls for.
    if ((body.length + padding) % 4 !== 0 || body.length % 4 === 0) {
      throw new Base64Error('invalid base64 padding');
    }
  }
  if (!STANDARD_OR_URL.test(body)) throw new Base64Error('invalid base64 character');
  const hasStandard = body.includes('+') || body.includes('/');
  const hasUrl = body.includes('-') || body.includes('_');
  if (hasStandard && hasUrl) throw new Base64Error('base64 mixes standard and URL-safe alphabets');
  if (body.length % 4 === 1) throw new Base64Error('invalid base64 length');
  return Buffer.from(body, hasUrl ? 'base64url' : 'base64');
}

function stripPadding(s: string): string {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === 0x3d /* = */) end--;
  return s.slice(0, end);
}

/** The same bytes as a Buffer (a view, not a copy): for Buffer's methods on any Uint8Array. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
