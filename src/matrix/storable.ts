// What Postgres cannot store in text or jsonb: U+0000, and a lone UTF-16 surrogate
// (valid in JSON text as an escape, not in UTF-8). Client bodies are refused at the edge
// (src/http/app.ts) and PDUs received over federation (src/federation/verifyPdu.ts) when
// they hold either: nothing that could never be projected gets into the log.

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * What in a parsed JSON value Postgres could not store — U+0000, or a lone UTF-16 surrogate
 * (valid in JSON text as an escape, not in UTF-8) — in any string or key; null if none.
 * Iterative, so any nesting the depth check let through is fine.
 */
export function unstorableString(value: unknown): string | null {
  const stack: unknown[] = [value];
  const check = (s: string): string | null => (s.includes('\u0000') ? 'U+0000' : LONE_SURROGATE.test(s) ? 'a lone surrogate' : null);
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      const bad = check(v);
      if (bad) return bad;
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        const bad = check(k);
        if (bad) return bad;
        stack.push(item);
      }
    }
  }
  return null;
}
