/**
 * Canonical JSON as defined by the Matrix specification (appendix "Canonical
 * JSON"): the shortest UTF-8 encoding, object keys sorted by Unicode code
 * point, integers only in [-(2^53-1), 2^53-1], and only the mandatory string
 * escapes.
 */

/** Thrown when a value cannot be represented in canonical JSON. */
export class CanonicalJsonError extends Error {
  override readonly name = 'CanonicalJsonError';
  /** JSON-pointer-ish location of the offending value, e.g. `$.content.ts`. */
  readonly path: string;
  constructor(message: string, path: string) {
    super(`${message} at ${path}`);
    this.path = path;
  }
}

const MAX_INT = Number.MAX_SAFE_INTEGER; // 2^53 - 1

/** Encodes `value` as canonical JSON text. */
export function canonicalJson(value: unknown): string {
  const fast = canonicalJsonOrUndefined(value);
  if (fast !== undefined) return fast;
  // The fast writer gave up: the checked writer throws the precise error (or, for a
  // structure nested deeper than the fast writer goes, writes it).
  return canonicalJsonChecked(value);
}

const utf8 = new TextEncoder();

/** Canonical JSON as UTF-8 bytes (what gets signed and hashed). */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalJson(value));
}

/**
 * Canonical JSON text, or undefined when `value` is not representable (or nests deeper
 * than the fast writer goes): the hot path of signing and verification, without the
 * bookkeeping that only an error message needs. Where it returns a string,
 * {@link canonicalJson} returns the same string.
 */
export function canonicalJsonOrUndefined(value: unknown): string | undefined {
  try {
    return writeFast(value, 0);
  } catch (err) {
    if (err === GIVE_UP) return undefined;
    throw err; // e.g. a RangeError from a getter; the checked writer would meet it too
  }
}

/** UTF-8 bytes of canonical JSON text, in a Buffer (Node's pool: cheaper than TextEncoder for small texts). */
export function utf8Bytes(json: string): Buffer {
  return Buffer.from(json, 'utf8');
}

function canonicalJsonChecked(value: unknown): string {
  const ctx: Context = { out: [], path: [], stack: new Set<object>() };
  writeValue(value, ctx);
  return ctx.out.join('');
}

/**
 * Orders two strings by Unicode code point, which is also UTF-8 byte order.
 * JavaScript's default `<` compares UTF-16 code units, which puts astral
 * characters (surrogate pairs, 0xD800-0xDFFF) before U+E000..U+FFFF.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca !== cb) return fixup(ca) - fixup(cb);
  }
  return a.length - b.length;
}

/** Moves surrogates above U+E000..U+FFFF so code-unit order matches code-point order. */
function fixup(c: number): number {
  if (c >= 0xe000) return c - 0x800;
  if (c >= 0xd800) return c + 0x2000;
  return c;
}

interface Context {
  out: string[];
  /** Keys / indices leading to the value being written; only formatted on error. */
  path: (string | number)[];
  /** Objects currently being written, for cycle detection. */
  stack: Set<object>;
}

function fail(message: string, ctx: Context): never {
  let path = '$';
  for (const part of ctx.path) path += typeof part === 'number' ? `[${part}]` : `.${part}`;
  throw new CanonicalJsonError(message, path);
}

function writeValue(value: unknown, ctx: Context): void {
  const { out, stack } = ctx;
  switch (typeof value) {
    case 'string':
      out.push(encodeString(value, ctx));
      return;
    case 'number':
      out.push(encodeNumber(value, ctx));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'object':
      if (value === null) {
        out.push('null');
        return;
      }
      break;
    case 'undefined':
      return fail('undefined is not representable in JSON', ctx);
    case 'bigint':
      return fail('bigint is not allowed in canonical JSON', ctx);
    default:
      return fail(`${typeof value} is not representable in JSON`, ctx);
  }

  const obj = value as object;
  if (stack.has(obj)) fail('circular structure', ctx);
  stack.add(obj);
  try {
    if (Array.isArray(obj)) {
      out.push('[');
      for (let i = 0; i < obj.length; i++) {
        if (i > 0) out.push(',');
        ctx.path.push(i);
        writeValue(obj[i], ctx);
        ctx.path.pop();
      }
      out.push(']');
      return;
    }
    const proto = Object.getPrototypeOf(obj) as unknown;
    if (proto !== Object.prototype && proto !== null) {
      const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      fail(`only plain objects and arrays are allowed, got ${name}`, ctx);
    }
    const record = obj as Record<string, unknown>;
    const keys = Object.keys(record).sort(compareCodePoints);
    out.push('{');
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      if (i > 0) out.push(',');
      ctx.path.push(key);
      out.push(encodeString(key, ctx), ':');
      writeValue(record[key], ctx);
      ctx.path.pop();
    }
    out.push('}');
  } finally {
    stack.delete(obj);
  }
}

function encodeNumber(n: number, ctx: Context): string {
  if (!Number.isFinite(n)) fail(`${n} is not allowed in canonical JSON`, ctx);
  if (!Number.isInteger(n)) fail(`non-integer ${n} is not allowed in canonical JSON`, ctx);
  if (n > MAX_INT || n < -MAX_INT) {
    fail(`integer ${n} is outside [-(2^53-1), 2^53-1]`, ctx);
  }
  // Within the safe range String() never uses exponent notation; -0 prints as "0".
  return String(n);
}

// Anything that needs escaping, or a surrogate that needs a well-formedness check.
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const NEEDS_WORK = /["\\\u0000-\u001f\ud800-\udfff]/;

const SHORT_ESCAPES: Record<number, string> = {
  0x08: '\\b',
  0x09: '\\t',
  0x0a: '\\n',
  0x0c: '\\f',
  0x0d: '\\r',
  0x22: '\\"',
  0x5c: '\\\\',
};

function encodeString(s: string, ctx: Context): string {
  const encoded = quoteString(s);
  if (encoded === undefined) fail('string contains a lone surrogate (not valid UTF-8)', ctx);
  return encoded;
}

/** `s` as a canonical JSON string literal; undefined if it holds a lone surrogate. */
function quoteString(s: string): string | undefined {
  if (!NEEDS_WORK.test(s)) return `"${s}"`;
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1); // NaN past the end
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++; // a well-formed surrogate pair is emitted raw
        continue;
      }
      return undefined;
    }
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(start, i);
    out += SHORT_ESCAPES[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
    start = i + 1;
  }
  return out + s.slice(start) + '"';
}

// ------------------------------------------------------------------ fast writer
//
// The same output as writeValue for plain JSON data, without a path, a cycle set or an
// output array: it gives up (throws GIVE_UP) on anything writeValue would reject, and on
// nesting deeper than MAX_FAST_DEPTH, which is how a cycle shows here. The caller then
// runs writeValue, which finds the error and its path.

/** Deeper than any event (the spec caps PDUs at 65,536 bytes), shallow enough for any stack. */
const MAX_FAST_DEPTH = 128;

const GIVE_UP: unique symbol = Symbol('canonical JSON: use the checked writer');

function writeFast(value: unknown, depth: number): string {
  switch (typeof value) {
    case 'string': {
      const encoded = quoteString(value);
      if (encoded === undefined) throw GIVE_UP;
      return encoded;
    }
    case 'number':
      // Integers in [-(2^53-1), 2^53-1]; String(-0) is "0", as encodeNumber writes it.
      if (!Number.isSafeInteger(value)) throw GIVE_UP;
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      if (value === null) return 'null';
      if (depth >= MAX_FAST_DEPTH) throw GIVE_UP;
      return Array.isArray(value) ? writeArrayFast(value, depth + 1) : writeObjectFast(value, depth + 1);
    default:
      throw GIVE_UP;
  }
}

function writeArrayFast(arr: readonly unknown[], depth: number): string {
  if (arr.length === 0) return '[]';
  let out = `[${writeFast(arr[0], depth)}`;
  for (let i = 1; i < arr.length; i++) out += `,${writeFast(arr[i], depth)}`;
  return `${out}]`;
}

function writeObjectFast(obj: object, depth: number): string {
  const proto = Object.getPrototypeOf(obj) as unknown;
  if (proto !== Object.prototype && proto !== null) throw GIVE_UP;
  const record = obj as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 0) return '{}';
  if (keys.length > 1) keys.sort(compareCodePoints);
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    const quoted = quoteString(key);
    if (quoted === undefined) throw GIVE_UP;
    out += `${i > 0 ? ',' : ''}${quoted}:${writeFast(record[key], depth)}`;
  }
  return `${out}}`;
}
