import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AccountStore, Session } from '../../clientapi/accounts.ts';
import { MatrixError } from '../errors.ts';
import { bearerToken } from '../secrets.ts';
import { checkBody } from '../bodyChecks.ts';

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

/**
 * The session of the request's access token as far as the token cache knows it now, or
 * `undefined` when the cache does not hold it (the caller then asks the database). A route
 * with a per-device rate limit needs it for the limit's key (onRequest) before the auth
 * hook needs it again (preHandler): the token is hashed once per request, but the cache is
 * asked each time, so a logout between the two (while the body uploads, or a read waits)
 * still answers the auth hook M_UNKNOWN_TOKEN.
 */
const tokenHashes = new WeakMap<FastifyRequest, string>();
export function cachedSessionOf(accounts: AccountStore, req: FastifyRequest, token: string): Session | undefined {
  let hash = tokenHashes.get(req);
  if (hash === undefined) {
    hash = accounts.hashToken(token);
    tokenHashes.set(req, hash);
  }
  return accounts.cachedSessionOfHash(hash);
}

export const guestForbidden = () => new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'guest accounts may not do this; register a full account');

/** The hooks requireAuth makes: clientRoute runs them before the body is judged (src/http/bodyChecks.ts). */
const authHooks = new WeakSet<object>();
export const isAuthHook = (hook: unknown): boolean => typeof hook === 'function' && authHooks.has(hook);

/**
 * A hook that requires a valid access token and puts its session on the request. Registered
 * through clientRoute it runs before the request's body is judged, as Synapse does: a request
 * without a valid token is 401 whatever its body, and one with a token hears what is wrong
 * with its body next (checkBody).
 */
export function requireAuth(accounts: AccountStore, options: AuthOptions = {}) {
  /** Puts the session on the request; throws the Matrix error for none or a guest not allowed here. */
  const admit = (req: FastifyRequest, session: Session | null): void => {
    if (!session) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'unknown or expired access token', { soft_logout: false });
    if (session.isGuest && !(options.guests && accounts.guestsAllowed)) throw guestForbidden();
    req.session = session;
  };
  /** Admitted: now the body, when the route left it to this hook. */
  const admitted = (req: FastifyRequest): void => {
    if (req.routeOptions.config?.bodyAfterAuth) checkBody(req);
  };
  // Callback style: a token in the cache (nearly every request) is admitted without a
  // promise; only a cache miss waits for the database.
  const hook = (req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void => {
    try {
      const token = bearerToken(req.headers, req.query);
      if (!token) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
      const cached = cachedSessionOf(accounts, req, token);
      if (cached === undefined) {
        accounts.authenticate(token).then((session) => {
          try {
            admit(req, session);
            admitted(req);
          } catch (err) {
            return done(err as Error);
          }
          done();
        }, done);
        return;
      }
      admit(req, cached);
      admitted(req);
    } catch (err) {
      return done(err as Error);
    }
    done();
  };
  authHooks.add(hook);
  return hook;
}

export function sessionOf(req: FastifyRequest): Session {
  if (!req.session) throw new MatrixError(401, 'M_MISSING_TOKEN', 'missing access token');
  return req.session;
}
