// Request bodies: strict UTF-8, JSON, and a bound on nesting, checked before anything
// reads a field. Invalid UTF-8 or invalid JSON is M_NOT_JSON; JSON nested deeper than
// MAX_JSON_DEPTH is M_BAD_JSON (it is JSON, but of a shape no endpoint takes). The depth
// bound keeps recursive code further down (canonical JSON, signing, jsonb in Postgres)
// far from any stack limit.
import { badJson, notJson, type MatrixError } from './errors.ts';

/** The deepest nesting of arrays and objects any body may have. */
export const MAX_JSON_DEPTH = 100;

const utf8 = new TextDecoder('utf-8', { fatal: true });

export type ParsedBody = { ok: true; value: unknown; text: string } | { ok: false; error: MatrixError };

/** Parses a request body. An empty (or all-whitespace) body parses as `undefined`. */
export function parseJsonBody(raw: Buffer | string, maxDepth = MAX_JSON_DEPTH): ParsedBody {
  let text: string;
  if (typeof raw === 'string') text = raw;
  else {
    try {
      text = utf8.decode(raw);
    } catch {
      return { ok: false, error: notJson('the request body is not valid UTF-8') };
    }
  }
  if (text.trim() === '') return { ok: true, value: undefined, text };
  const depth = nestingDepth(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, error: notJson() };
  }
  if (depth > maxDepth) return { ok: false, error: badJson(`the request body is nested ${depth} levels deep; the limit is ${maxDepth}`) };
  return { ok: true, value, text };
}

/**
 * The deepest nesting of `[`/`{` in JSON text, outside strings. Linear, no recursion; on
 * text that is not JSON the number means little, and JSON.parse reports the real error.
 */
export function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) max = depth;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return max;
}

/**
 * A filter given as JSON in a query parameter (/sync's inline filter, /messages' and
 * /context's room event filter): `400 M_NOT_JSON` when it does not parse, `400 M_BAD_JSON`
 * with what `problemOf` finds wrong with its shape.
 */
export function jsonFilterParam(raw: string, problemOf: (value: unknown) => string | null): unknown {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw notJson('filter is not valid JSON');
  }
  const problem = problemOf(value);
  if (problem) throw badJson(`filter: ${problem}`);
  return value;
}
