// X-Matrix request authentication for the federation API. Missing, malformed or wrong
// signatures, unknown keys, and a destination that is not this server are 401
// M_UNAUTHORIZED — checked before the handler runs, so nothing is written.
import type { FastifyRequest } from 'fastify';
import { parseXMatrixHeader, verifyRequestSignature } from '../../crypto';
import { isValidServerName } from '../../events/ids';
import type { FederationContext } from '../../federation/context';
import { unauthorized } from '../errors';

declare module 'fastify' {
  interface FastifyRequest {
    origin?: string;
  }
}

export function requireServerAuth(ctx: FederationContext) {
  return async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization;
    if (typeof header !== 'string') throw unauthorized('missing X-Matrix authorization');
    const auth = parseXMatrixHeader(header);
    if (!auth) throw unauthorized('malformed X-Matrix authorization');
    if (!isValidServerName(auth.origin)) throw unauthorized('malformed origin');
    if (auth.destination !== undefined && auth.destination !== ctx.config.serverName) throw unauthorized('the request is for another server');
    if (auth.origin === ctx.config.serverName) throw unauthorized('requests from ourselves are not accepted');
    const key = await ctx.keyRing.requestKey(auth.origin, auth.key);
    if (!key) throw unauthorized(`unknown key ${auth.key} of ${auth.origin}`);
    const ok = verifyRequestSignature(
      { method: req.method, uri: req.raw.url ?? req.url, origin: auth.origin, destination: ctx.config.serverName, content: req.body },
      auth,
      key,
    );
    if (!ok) throw unauthorized('bad X-Matrix signature');
    req.origin = auth.origin;
  };
}

export function originOf(req: FastifyRequest): string {
  if (!req.origin) throw unauthorized('unauthenticated');
  return req.origin;
}
