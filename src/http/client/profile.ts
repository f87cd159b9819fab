// Profiles: display name and avatar of local users. Reading needs no access token; a user
// changes only their own, and the change shows in their member events (rooms/membership.ts).
// peekd does not ask other servers for profiles (no federation profile query): a remote
// user's profile answers 404.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { readProfile, writeProfileField, type Profile } from '../../clientapi/profiles.ts';
import { isValidUserId, serverOf } from '../../events/ids.ts';
import { MatrixError, forbidden, invalidParam, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';
import { reflectProfileInRooms } from './rooms/membership.ts';

/** The longest display name, in characters (Synapse's limit). */
const MAX_DISPLAYNAME_CHARS = 256;
/** The longest avatar URL, in characters (Synapse's limit). */
const MAX_AVATAR_URL_CHARS = 1000;

type Field = keyof Profile;

function userIdParam(req: FastifyRequest): string {
  const { userId } = req.params as { userId: string };
  if (!isValidUserId(userId)) throw invalidParam('malformed user ID');
  return userId;
}

/** The value a PUT sets (null: cleared), or the spec's 400 for a body that does not give one. */
function newValue(field: Field, body: Record<string, unknown>): string | null {
  if (!(field in body)) throw new MatrixError(400, 'M_MISSING_PARAM', `the body needs ${field}`);
  const value = body[field];
  if (typeof value !== 'string') throw invalidParam(`${field} must be a string`);
  if (value === '') return null;
  if (field === 'displayname' && [...value].length > MAX_DISPLAYNAME_CHARS) throw invalidParam(`displayname is longer than ${MAX_DISPLAYNAME_CHARS} characters`);
  // Usually an mxc:// URI, but the specification asks only for a URL (as Synapse does).
  if (field === 'avatar_url' && [...value].length > MAX_AVATAR_URL_CHARS) throw invalidParam(`avatar_url is longer than ${MAX_AVATAR_URL_CHARS} characters`);
  return value;
}

export function registerProfileRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const profileOf = async (userId: string): Promise<Profile> => {
    // Local users only: peekd does not query other servers for profiles.
    const profile = serverOf(userId) === ctx.config.serverName ? await readProfile(ctx.db, userId) : null;
    if (!profile) throw notFound('no such user');
    return profile;
  };

  clientRoute(app, { method: 'GET', path: '/profile/:userId', config: { barrier: false }, handler: async (req) => profileOf(userIdParam(req)) });

  for (const field of ['displayname', 'avatar_url'] as const) {
    clientRoute(app, {
      method: 'GET',
      path: `/profile/:userId/${field}`,
      config: { barrier: false },
      handler: async (req) => {
        // A user with no value for the field (a guest's display name, an avatar never set)
        // gets 200 and an empty object, as from Synapse (sytest's guest tests read a guest's
        // display name before setting it); an unknown user is 404.
        const value = (await profileOf(userIdParam(req)))[field];
        return value === undefined ? {} : { [field]: value };
      },
    });

    clientRoute(app, {
      method: 'PUT',
      path: `/profile/:userId/${field}`,
      config: { barrier: false },
      schema: { body: { type: 'object' } },
      // Guests may set a display name, not an avatar (client-server API, Guest access).
      preHandler: requireAuth(ctx.accounts, { guests: field === 'displayname' }),
      handler: async (req) => {
        const session = sessionOf(req);
        const userId = userIdParam(req);
        if (userId !== session.userId) throw forbidden(`you may only change your own ${field}`);
        const value = newValue(field, req.body as Record<string, unknown>);
        const profile = await writeProfileField(ctx.db, userId, field, value);
        await reflectProfileInRooms(ctx, req, session, profile);
        return {};
      },
    });
  }
}
