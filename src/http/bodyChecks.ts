// Every request body is a JSON object (no Matrix endpoint takes anything else): other JSON
// is 400 M_BAD_JSON, and a route with a body schema that gets no body at all answers
// M_NOT_JSON. Routes open to anyone check this before anything else; client routes that
// need an access token once the token is admitted (requireAuth: 401 first, as Synapse); the
// federation API once the request's signature holds (requireServerAuth), so an unsigned or forged request
// is 401 whatever its body — a parse error waits on the request until then (and the
// signature is then checked as over no content: only a request signed without one hears
// what is wrong with its body).
import type { FastifyRequest } from 'fastify';
import { badJson, notJson, type MatrixError } from './errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's access-token check judges the body once the token is admitted (clientRoute). */
    bodyAfterAuth?: boolean;
  }
}

const DEFERRED = Symbol('peekd.deferredBodyError');

type WithDeferred = FastifyRequest & { [DEFERRED]?: MatrixError };

/** Whether the request's body is judged after its authentication: the federation API, and client routes that need a token. */
export function bodyAfterAuth(req: FastifyRequest): boolean {
  return isFederationRequest(req) || req.routeOptions?.config?.bodyAfterAuth === true;
}

/** Whether the request is for the federation API (by its route, whatever escapes its URL spells the path with). */
export function isFederationRequest(req: FastifyRequest): boolean {
  return (req.routeOptions?.url ?? req.url).startsWith('/_matrix/federation/');
}

/** Keeps a body's parse error on its request, for checkBody to throw. */
export function deferBodyError(req: FastifyRequest, err: MatrixError): void {
  (req as WithDeferred)[DEFERRED] = err;
}

/** The parse error kept on the request, if its body could not be parsed. */
export function deferredBodyError(req: FastifyRequest): MatrixError | undefined {
  return (req as WithDeferred)[DEFERRED];
}

/** The body is a JSON object (an empty one where the route allows no body): throws the Matrix error otherwise. */
export function checkBody(req: FastifyRequest): void {
  const deferred = (req as WithDeferred)[DEFERRED];
  if (deferred) throw deferred;
  if (req.body === undefined) {
    if (!req.routeOptions.schema?.body) return;
    if (req.method === 'POST' && isLenientEmptyBody(req.url)) {
      req.body = {};
      return;
    }
    throw notJson('the request needs a JSON object body');
  }
  if (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) throw badJson('the request body must be a JSON object');
}

/** POSTs whose body may be left out entirely (clients send none for these). */
function isLenientEmptyBody(url: string): boolean {
  return /\/(peek\/[^/]+|rooms\/[^/]+\/(join|leave|unpeek)|join\/[^/]+|logout(\/all)?|register)(\?|$)/.test(url);
}
