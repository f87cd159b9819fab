import type { FastifyRequest } from 'fastify';
import type { AccountStore, Session } from '../../clientapi/accounts.ts';
import { MatrixError } from '../errors.ts';
import { bearerToken } from '../secrets.ts';

declare module 'fastify' {
  interface FastifyRequest {
    session?: Session;
  }
}

/** A preHandler that requires a valid access token and puts its session on the request. */
export function requireAuth(accounts: AccountStore) {
  return async (req: FastifyRequest): Promise<void> => {
    const token = bearerToken(req.headers, req.query);
    if (!token) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
    const session = await accounts.authenticate(token);
    if (!session) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'unknown or expired access token', { soft_logout: false });
    req.session = session;
  };
}

export function sessionOf(req: FastifyRequest): Session {
  if (!req.session) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
  return req.session;
}
