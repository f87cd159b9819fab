// Sending Matrix errors over HTTP: the error handler, and the answer to requests Node's
// parser refuses before Fastify sees them. The errors themselves live in src/matrix/errors.ts.
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type MatrixError, toMatrixError } from '../matrix/errors.ts';

export { MatrixError, notJson, badJson, invalidParam, notFound, forbidden, unrecognized, unauthorized, limitExceeded, domainToMatrix, toMatrixError } from '../matrix/errors.ts';

export function sendMatrixError(reply: FastifyReply, err: MatrixError): FastifyReply {
  const retryAfterMs = err.extra.retry_after_ms;
  if ((err.status === 503 || err.status === 429) && typeof retryAfterMs === 'number') reply.header('Retry-After', String(Math.max(1, Math.ceil(retryAfterMs / 1000))));
  // Serialized here, so that Fastify leaves the type as given: `application/json` exactly
  // (it appends `; charset=utf-8` to JSON it serializes itself). Replies built outside the
  // request lifecycle (the router's own errors) skip the onSend hook that does this for the rest.
  return reply
    .code(err.status)
    .type('application/json')
    .serializer((payload) => JSON.stringify(payload))
    .send({ errcode: err.errcode, error: err.message, ...err.extra });
}

export function matrixErrorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const m = toMatrixError(err);
  if (m.status === 503) request.log.warn({ err }, 'request answered 503 (transient)');
  else if (m.status >= 500) request.log.error({ err }, 'request failed');
  return sendMatrixError(reply, m);
}

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (headers or request line
 * too large, malformed HTTP, timeouts), answered with a Matrix error body.
 */
export function matrixClientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let errcode = 'M_UNKNOWN';
  let message = 'malformed HTTP request';
  if (err.code === 'HPE_HEADER_OVERFLOW') [status, errcode, message] = [431, 'M_TOO_LARGE', 'the request line or headers are too large'];
  else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') [status, errcode, message] = [408, 'M_UNKNOWN', 'the request took too long to arrive'];
  const body = JSON.stringify({ errcode, error: message });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(err);
}
