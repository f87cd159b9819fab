import type { FastifyRequest } from 'fastify';
import type { AccountStore, Session } from '../../clientapi/accounts.ts';
import { MatrixError } from '../errors.ts';
import { bearerToken } from '../secrets.ts';

declare module 'fastify' {
  interface FastifyRequest {
    session?: Session;
  }
}

export interface AuthOptions {
  /**
   * Whether guest accounts may call the route (default false: a guest gets 403
   * M_GUEST_ACCESS_FORBIDDEN). The client-server specification lists what guests may do:
   * sync, read world_readable rooms, peek, join rooms with guest_access can_join, set a
   * display name, and a few more.
   */
  guests?: boolean;
}

export const guestForbidden = () => new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'guest accounts may not do this; register a full account');

/** A preHandler that requires a valid access token and puts its session on the request. */
export function requireAuth(accounts: AccountStore, options: AuthOptions = {}) {
  return async (req: FastifyRequest): Promise<void> => {
    const token = bearerToken(req.headers, req.query);
    if (!token) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
    const session = await accounts.authenticate(token);
    if (!session) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'unknown or expired access token', { soft_logout: false });
    if (session.isGuest && !(options.guests && accounts.guestsAllowed)) throw guestForbidden();
    req.session = session;
  };
}

export function sessionOf(req: FastifyRequest): Session {
  if (!req.session) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
  return req.session;
}
