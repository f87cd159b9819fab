// X-Matrix request authentication for the federation API. Missing, malformed or wrong
// signatures, unknown keys, and a destination that is not this server are 401
// M_UNAUTHORIZED — checked before the handler runs, so nothing is written. A header with no
// destination at all is accepted (the server-server spec: "for compatibility with older
// servers, recipients should accept requests without this parameter"); its signature is
// checked against this server's name, so it still holds only if it was made for us.
import type { FastifyRequest } from 'fastify';
import { decodeBase64, parseXMatrixHeader, verifyRequestSignature, type XMatrixAuth } from '../../crypto/index.ts';
import { isValidServerName } from '../../events/ids.ts';
import type { FederationContext } from '../../federation/context.ts';
import { unauthorized } from '../errors.ts';
import { checkBody, deferredBodyError } from '../bodyChecks.ts';

declare module 'fastify' {
  interface FastifyRequest {
    origin?: string;
  }
}

const KEY_ID = /^ed25519:[a-zA-Z0-9_]+$/;

/** X-Matrix headers a request may carry (one per signing key of its origin). */
const MAX_X_MATRIX_HEADERS = 8;

/**
 * Every `Authorization` header of the request that is an X-Matrix one. Node keeps only the
 * first `Authorization` header in `req.headers`; a server signing with several keys sends one
 * header per key (and a request may carry other schemes beside them), so read them all.
 */
function xMatrixHeaders(req: FastifyRequest): string[] {
  const raw = req.raw.rawHeaders;
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'authorization' && /^[ \t]*x-matrix[ \t]/i.test(raw[i + 1]!)) out.push(raw[i + 1]!);
  }
  return out;
}

export function requireServerAuth(ctx: FederationContext) {
  return async (req: FastifyRequest): Promise<void> => {
    const headers = xMatrixHeaders(req);
    if (headers.length === 0) throw unauthorized('missing X-Matrix authorization');
    if (headers.length > MAX_X_MATRIX_HEADERS) throw unauthorized(`more than ${MAX_X_MATRIX_HEADERS} X-Matrix authorizations`);
    const auths: XMatrixAuth[] = [];
    for (const header of headers) {
      const auth = parseXMatrixHeader(header);
      if (!auth) throw unauthorized('malformed X-Matrix authorization');
      if (!isValidServerName(auth.origin)) throw unauthorized('malformed origin');
      if (auths.length > 0 && auth.origin !== auths[0]!.origin) throw unauthorized('X-Matrix authorizations from more than one origin');
      // Everything that can be judged without the origin's keys is judged first: a request
      // that fails here never makes us fetch anything (nor connect anywhere).
      if (auth.destination !== undefined && auth.destination !== ctx.config.serverName) throw unauthorized('the request is for another server');
      if (auth.origin === ctx.config.serverName) throw unauthorized('requests from ourselves are not accepted');
      if (!KEY_ID.test(auth.key)) throw unauthorized(`unsupported key ID ${JSON.stringify(auth.key.slice(0, 64))}`);
      if (!isSignature(auth.sig)) throw unauthorized('the X-Matrix sig is not an ed25519 signature');
      auths.push(auth);
    }
    // As Synapse: a signature by a key we cannot find is passed over, one by a key we have
    // must hold, and at least one must.
    const origin = auths[0]!.origin;
    // A body that could not be parsed is no content to check the signature over: checked
    // as a request without one, so only a request signed that way hears of its body (checkBody).
    const signed = { method: req.method, uri: req.raw.url ?? req.url, origin, destination: ctx.config.serverName, content: deferredBodyError(req) ? undefined : req.body };
    let verified = false;
    for (const auth of auths) {
      const key = await ctx.keyRing.requestKey(origin, auth.key);
      if (!key) continue;
      const ok = verifyRequestSignature(signed, auth, key);
      if (!ok) throw unauthorized('bad X-Matrix signature');
      verified = true;
    }
    if (!verified) throw unauthorized(`unknown key ${auths.map((a) => a.key).join(', ')} of ${origin}`);
    req.origin = origin;
    // Now the body may be judged (src/http/bodyChecks.ts).
    checkBody(req);
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
