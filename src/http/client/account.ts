// Accounts: register (m.login.dummy, one call), login (password), logout, whoami.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isValidNewLocalpart, UserInUseError } from '../../clientapi/accounts.ts';
import { accountKey, addressKey, GuestRegistrationLimiter, LoginLimiter } from '../../clientapi/loginLimiter.ts';
import { IpRanges } from '../../ipRanges.ts';
import { PasswordHasher, PasswordHasherBusyError } from '../../clientapi/passwords.ts';
import { isValidUserId, localpartOf, serverOf } from '../../events/ids.ts';
import { forbidden, limitExceeded, MatrixError } from '../errors.ts';
import { guestForbidden, requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { endDevicePeeks } from './peek.ts';

const registerBody = {
  type: 'object',
  properties: {
    username: { type: 'string' },
    password: { type: 'string', maxLength: 512 },
    device_id: { type: 'string', minLength: 1, maxLength: 255 },
    initial_device_display_name: { type: 'string', maxLength: 255 },
    inhibit_login: { type: 'boolean' },
    auth: { type: 'object' },
    guest_access_token: { type: 'string', maxLength: 1024 },
  },
} as const;

const loginBody = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    identifier: { type: 'object', properties: { type: { type: 'string' }, user: { type: 'string' } } },
    user: { type: 'string' },
    password: { type: 'string', maxLength: 512 },
    device_id: { type: 'string', minLength: 1, maxLength: 255 },
    initial_device_display_name: { type: 'string', maxLength: 255 },
  },
} as const;

/** A full hashing queue is a 429 like any other limit; other errors pass unchanged. */
function hashingBusy(err: unknown): unknown {
  return err instanceof PasswordHasherBusyError ? limitExceeded(err.retryAfterMs, 'the server is busy checking passwords; try again shortly') : err;
}

const registrationClosed = () => forbidden('registration is disabled on this server');

export function registerAccountRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  const guestAuth = requireAuth(ctx.accounts, { guests: true });
  // Both live as long as this HTTP server: the hashing pool bounds this process's scrypt
  // memory (16 MiB a hash), the limiter the guesses per account and per client address.
  const hasher = PasswordHasher.fromConfig(ctx.config);
  const loginLimiter = LoginLimiter.fromConfig(ctx.config);
  const exemptAddresses = new IpRanges(ctx.config.loginFailureExemptAddresses);
  const guestLimiter = GuestRegistrationLimiter.fromConfig(ctx.config);

  clientRoute(app, {
    method: 'POST',
    path: '/register',
    schema: { body: registerBody },
    config: { barrier: false, rateLimit: { max: ctx.config.registrationRatePerSecond, timeWindow: 1000, keyGenerator: (req: FastifyRequest) => `register\u0000${req.ip}` } },
    handler: async (req, reply) => {
      const q = req.query as { kind?: string };
      const body = (req.body ?? {}) as {
        username?: string;
        password?: string;
        device_id?: string;
        initial_device_display_name?: string;
        inhibit_login?: boolean;
        auth?: { type?: unknown; session?: unknown };
        guest_access_token?: string;
      };
      // User IDs are lowercase: a requested name is taken in lowercase (as Synapse does).
      if (typeof body.username === 'string') body.username = body.username.toLowerCase();
      if (q.kind !== undefined && q.kind !== 'user' && q.kind !== 'guest') throw new MatrixError(400, 'M_INVALID_PARAM', 'kind must be "user" or "guest"');
      // Closed: every call answers 403, guests' included, and the first one that asks for the flows.
      if (ctx.config.registration === 'closed') throw registrationClosed();
      if (q.kind === 'guest') {
        // A guest account: no credentials, no user-interactive authentication; limited per
        // client address instead.
        if (!ctx.config.guestAccess) throw guestForbidden();
        const gate = guestLimiter.take(addressKey(req.ip));
        if (!gate.allowed) throw limitExceeded(gate.retryAfterMs, 'too many guest registrations from this address; try again later');
        const userId = await ctx.accounts.registerGuest();
        const s = await ctx.accounts.createSession(userId, undefined, body.initial_device_display_name);
        return { user_id: userId, access_token: s.accessToken, device_id: s.deviceId, home_server: ctx.config.serverName };
      }
      // Upgrading a guest: the account keeps its user ID (and so its rooms and history).
      let guestUserId: string | undefined;
      if (body.guest_access_token !== undefined) {
        if (!ctx.config.guestAccess) throw guestForbidden();
        const guest = await ctx.accounts.authenticate(body.guest_access_token);
        if (!guest) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'unknown or expired guest_access_token', { soft_logout: false });
        if (!guest.isGuest) throw forbidden('guest_access_token belongs to an account that is not a guest');
        guestUserId = guest.userId;
        if (body.username !== undefined && ctx.accounts.userIdFor(body.username) !== guestUserId) {
          throw new MatrixError(400, 'M_INVALID_PARAM', `a guest keeps its user ID when it registers: username must be ${localpartOf(guestUserId)} or absent`);
        }
      } else {
        if (body.username !== undefined && !isValidNewLocalpart(body.username, ctx.config.serverName)) {
          throw new MatrixError(400, 'M_INVALID_USERNAME', 'user names may contain only a-z, 0-9, and . _ = - / +');
        }
        if (body.username !== undefined && (await ctx.accounts.exists(ctx.accounts.userIdFor(body.username)))) {
          throw new MatrixError(400, 'M_USER_IN_USE', 'that user ID is taken');
        }
      }
      // User-interactive authentication with one stage, m.login.dummy: a client that sends
      // it registers in one call; one that sends no auth learns the flows first.
      const session = typeof body.auth?.session === 'string' ? body.auth.session : randomBytes(12).toString('base64url');
      const uia = { flows: [{ stages: ['m.login.dummy'] }], params: {}, session };
      if (!body.auth) return reply.code(401).send(uia);
      if (body.auth.type !== 'm.login.dummy') throw new MatrixError(401, 'M_UNRECOGNIZED', 'only m.login.dummy is offered', uia);
      let userId: string;
      try {
        if (guestUserId !== undefined) {
          if (!(await ctx.accounts.upgradeGuest(guestUserId, body.password, hasher))) throw new MatrixError(400, 'M_USER_IN_USE', 'that guest account was already upgraded');
          userId = guestUserId;
        } else {
          userId = await ctx.accounts.register(body.username, body.password, hasher);
        }
      } catch (err) {
        if (err instanceof UserInUseError) throw new MatrixError(400, 'M_USER_IN_USE', 'that user ID is taken');
        throw hashingBusy(err);
      }
      if (body.inhibit_login) return { user_id: userId, home_server: ctx.config.serverName };
      const s = await ctx.accounts.createSession(userId, body.device_id, body.initial_device_display_name);
      return { user_id: userId, access_token: s.accessToken, device_id: s.deviceId, home_server: ctx.config.serverName };
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/register/available',
    handler: async (req) => {
      if (ctx.config.registration === 'closed') throw registrationClosed();
      const username = (req.query as { username?: string }).username ?? '';
      if (!isValidNewLocalpart(username, ctx.config.serverName)) throw new MatrixError(400, 'M_INVALID_USERNAME', 'invalid user name');
      if (await ctx.accounts.exists(ctx.accounts.userIdFor(username))) throw new MatrixError(400, 'M_USER_IN_USE', 'that user ID is taken');
      return { available: true };
    },
  });

  clientRoute(app, { method: 'GET', path: '/login', config: { barrier: false }, handler: async () => ({ flows: [{ type: 'm.login.password' }] }) });

  clientRoute(app, {
    method: 'POST',
    path: '/login',
    config: { barrier: false },
    schema: { body: loginBody },
    handler: async (req) => {
      const body = req.body as { type?: string; identifier?: { type?: string; user?: string }; user?: string; password?: string; device_id?: string; initial_device_display_name?: string };
      if (body.type !== 'm.login.password') throw new MatrixError(400, 'M_UNKNOWN', 'unknown login type');
      if (body.identifier && body.identifier.type !== undefined && body.identifier.type !== 'm.id.user') {
        throw new MatrixError(400, 'M_UNKNOWN', 'only m.id.user identifiers are supported');
      }
      const who = body.identifier?.user ?? body.user;
      if (typeof who !== 'string' || typeof body.password !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'user and password are required');
      // Localparts are case-insensitive at login (this server only hands out lowercase ones).
      const userId = who.startsWith('@') ? `@${localpartOf(who).toLowerCase()}:${serverOf(who)}` : ctx.accounts.userIdFor(who.toLowerCase());
      // Limits first, so a refused guess costs no hash. Unknown and malformed user names
      // count like real ones: the answers must not tell them apart.
      const account = accountKey(userId);
      // The local machine (a test suite, a reverse proxy: every client would share its
      // address) is limited per account only.
      const address = exemptAddresses.has(req.ip) ? null : addressKey(req.ip);
      const gate = await loginLimiter.admit(account, address);
      if (!gate.allowed) throw limitExceeded(gate.retryAfterMs, 'too many failed logins; try again later');
      let ok: boolean;
      try {
        // No account can exist under a malformed or foreign user ID, so nothing to hide by hashing.
        ok = isValidUserId(userId) && serverOf(userId) === ctx.config.serverName && (await ctx.accounts.checkPassword(userId, body.password, hasher));
      } catch (err) {
        loginLimiter.abandoned(account, address);
        throw hashingBusy(err);
      }
      if (!ok) {
        loginLimiter.failed(account, address);
        throw forbidden('invalid user name or password');
      }
      loginLimiter.succeeded(account, address);
      const s = await ctx.accounts.createSession(userId, body.device_id, body.initial_device_display_name);
      return { user_id: userId, access_token: s.accessToken, device_id: s.deviceId, home_server: ctx.config.serverName };
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/logout',
    config: { barrier: false },
    preHandler: auth,
    handler: async (req) => {
      const { userId, deviceId } = sessionOf(req);
      await ctx.accounts.removeDevice(userId, deviceId);
      await endDevicePeeks(ctx, req, userId, deviceId, 'device_removed');
      return {};
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/logout/all',
    config: { barrier: false },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      for (const deviceId of await ctx.accounts.devicesOf(userId)) {
        await ctx.accounts.removeDevice(userId, deviceId);
        await endDevicePeeks(ctx, req, userId, deviceId, 'device_removed');
      }
      return {};
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/account/whoami',
    config: { barrier: false },
    preHandler: guestAuth,
    handler: async (req) => {
      const { userId, deviceId, isGuest } = sessionOf(req);
      return { user_id: userId, device_id: deviceId, is_guest: isGuest === true };
    },
  });
}
