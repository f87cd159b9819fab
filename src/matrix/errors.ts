// Matrix errors: {errcode, error} with the status the specification gives, and the one
// place that maps any error (domain, transient, framework) to one. Used by the HTTP layer
// (which sends them) and by federation code (which raises them); free of HTTP itself.
import { DomainError } from '../actors/errors.ts';
import { isTransient, ServiceUnavailableError } from '../nats/errors.ts';

export class MatrixError extends Error {
  override readonly name = 'MatrixError';
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const notJson = (why = 'the request body is not valid JSON') => new MatrixError(400, 'M_NOT_JSON', why);
export const badJson = (why: string) => new MatrixError(400, 'M_BAD_JSON', why);
export const invalidParam = (why: string) => new MatrixError(400, 'M_INVALID_PARAM', why);
export const notFound = (why = 'not found') => new MatrixError(404, 'M_NOT_FOUND', why);
export const forbidden = (why: string) => new MatrixError(403, 'M_FORBIDDEN', why);
export const unrecognized = (why = 'unrecognized request') => new MatrixError(404, 'M_UNRECOGNIZED', why);
export const unauthorized = (why: string) => new MatrixError(401, 'M_UNAUTHORIZED', why);
export const limitExceeded = (retryAfterMs: number, why = 'too many requests') => new MatrixError(429, 'M_LIMIT_EXCEEDED', why, { retry_after_ms: retryAfterMs });

export function domainToMatrix(err: DomainError): MatrixError {
  switch (err.code) {
    case 'invalid':
      return new MatrixError(400, 'M_INVALID_PARAM', err.message);
    case 'not_found':
      return new MatrixError(404, 'M_NOT_FOUND', err.message);
    case 'forbidden':
      return new MatrixError(403, 'M_FORBIDDEN', err.message);
    case 'bad_state':
      return new MatrixError(400, 'M_BAD_STATE', err.message);
    case 'conflict':
      return new MatrixError(409, 'M_UNKNOWN', err.message);
    case 'incompatible_room_version':
      return new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', err.message, { room_version: (err as { roomVersion?: string }).roomVersion });
    case 'too_large':
      return new MatrixError(413, 'M_TOO_LARGE', err.message);
    case 'bad_json':
      return new MatrixError(400, 'M_BAD_JSON', err.message);
    case 'limit_exceeded': {
      const retry = (err as { retryAfterMs?: number }).retryAfterMs;
      return new MatrixError(429, 'M_LIMIT_EXCEEDED', err.message, retry !== undefined ? { retry_after_ms: retry } : {});
    }
  }
}

export function toMatrixError(err: unknown): MatrixError {
  if (err instanceof MatrixError) return err;
  if (err instanceof DomainError) return domainToMatrix(err);
  if (isTransient(err)) {
    // Nothing is lost: the request may be repeated as it is (commands are idempotent by ID).
    const retryAfterMs = err instanceof ServiceUnavailableError ? err.retryAfterMs : 1000;
    return new MatrixError(503, 'M_UNKNOWN', 'the server is busy recovering; try again shortly', { retry_after_ms: retryAfterMs });
  }
  // Errors of the HTTP framework (Fastify), read by their code and status only.
  const fe = err as { code?: string; validation?: unknown; message?: string; statusCode?: number };
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new MatrixError(413, 'M_TOO_LARGE', 'the request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return notJson();
  }
  if (fe.validation) return badJson(fe.message ?? 'the request body has the wrong shape');
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new MatrixError(fe.statusCode, fe.statusCode === 404 ? 'M_UNRECOGNIZED' : 'M_UNKNOWN', fe.message ?? 'bad request');
  }
  return new MatrixError(500, 'M_UNKNOWN', 'internal server error');
}
