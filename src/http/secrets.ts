import { createHash, timingSafeEqual } from 'node:crypto';

/** Compares two secrets in constant time (over their SHA-256, so lengths leak nothing). */
export function secretsEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * The bearer token of a request: `Authorization: Bearer …`, or `?access_token=…` when the
 * query is given (the client API allows it, as the Matrix specification does; the admin API
 * does not).
 */
export function bearerToken(headers: Record<string, string | string[] | undefined>, query?: unknown): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = auth.match(/^Bearer\s+(.+)$/i);
    if (m) return m[1]!.trim();
  }
  const q = (query as Record<string, unknown> | undefined)?.access_token;
  return typeof q === 'string' && q !== '' ? q : undefined;
}
