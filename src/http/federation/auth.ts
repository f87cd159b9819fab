// X-Matrix request authentication for the federation API. Missing, malformed or wrong
// signatures, unknown keys, and a destination that is not this server are 401
// M_UNAUTHORIZED — checked before the handler runs, so nothing is written. A header with no
// destination at all is accepted (the server-server spec: "for compatibility with older
// servers, recipients should accept requests without this parameter"); its signature is
// checked against this server's name, so it still holds only if it was made for us.
import type { FastifyRequest } from 'fastify';
import { decodeBase64, parseXMatrixHeader, verifyRequestSignature } from '../../crypto/index.ts';
import { isValidServerName } from '../../events/ids.ts';
import type { FederationContext } from '../../federation/context.ts';
import { unauthorized } from '../errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    origin?: string;
  }
}

const KEY_ID = /^ed25519:[a-zA-Z0-9_]+$/;

export function requireServerAuth(ctx: FederationContext) {
  return async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization;
    if (typeof header !== 'string') throw unauthorized('missing X-Matrix authorization');
    const auth = parseXMatrixHeader(header);
    if (!auth) throw unauthorized('malformed X-Matrix authorization');
    if (!isValidServerName(auth.origin)) throw unauthorized('malformed origin');
    // Everything that can be judged without the origin's keys is judged first: a request
    // that fails here never makes us fetch anything (nor connect anywhere).
    if (auth.destination !== undefined && auth.destination !== ctx.config.serverName) throw unauthorized('the request is for another server');
    if (auth.origin === ctx.config.serverName) throw unauthorized('requests from ourselves are not accepted');
    if (!KEY_ID.test(auth.key)) throw unauthorized(`unsupported key ID ${JSON.stringify(auth.key.slice(0, 64))}`);
    if (!isSignature(auth.sig)) throw unauthorized('the X-Matrix sig is not an ed25519 signature');
    const key = await ctx.keyRing.requestKey(auth.origin, auth.key);
    if (!key) throw unauthorized(`unknown key ${auth.key} of ${auth.origin}`);
    const ok = verifyRequestSignature({ method: req.method, uri: req.raw.url ?? req.url, origin: auth.origin, destination: ctx.config.serverName, content: req.body }, auth, key);
    if (!ok) throw unauthorized('bad X-Matrix signature');
    req.origin = auth.origin;
  };
}

function isSignature(sig: string): boolean {
  try {
    return decodeBase64(sig).length === 64;
  } catch {
    return false;
  }
}

export function originOf(req: FastifyRequest): string {
  if (!req.origin) throw unauthorized('unauthenticated');
  return req.origin;
}
