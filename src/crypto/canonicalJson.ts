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
  const ctx: Context = { out: [], path: [], stack: new Set<object>() };
  writeValue(value, ctx);
  return ctx.out.join('');
}

const utf8 = new TextEncoder();

/** Canonical JSON as UTF-8 bytes (what gets signed and hashed). */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalJson(value));
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
      fail('undefined is not representable in JSON', ctx);
    case 'bigint':
      fail('bigint is not allowed in canonical JSON', ctx);
    default:
      fail(`${typeof value} is not representable in JSON`, ctx);
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
      fail('string contains a lone surrogate (not valid UTF-8)', ctx);
    }
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(start, i);
    out += SHORT_ESCAPES[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
    start = i + 1;
  }
  return out + s.slice(start) + '"';
}
