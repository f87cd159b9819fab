// Account data (client-server API, "Client Config"): GET/PUT /user/{userId}/account_data/{type}
// and /user/{userId}/rooms/{roomId}/account_data/{type}. Only for oneself; guests too. A PUT
// takes the next client-data position and wakes the user's /sync (src/syncapi/clientData.ts).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isValidRoomId, isValidUserId } from '../../events/ids.ts';
import { badJson, forbidden, invalidParam, MatrixError, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';

/** Longest account data type accepted (event types are short; this bounds the key). */
export const MAX_ACCOUNT_DATA_TYPE_LENGTH = 255;

/**
 * Types the server controls, refused through this API (405 M_BAD_JSON, as the spec says):
 * m.fully_read is set with read markers, m.push_rules with /pushrules.
 */
const SERVER_CONTROLLED = new Set(['m.fully_read', 'm.push_rules']);

/**
 * Stores account data for a user (roomId '' for global) and wakes their /sync — for other
 * endpoints that keep state as account data (read markers' m.fully_read, push rules),
 * which this API refuses to take from clients directly.
 */
export function setAccountData(ctx: Pick<ClientContext, 'sync'>, userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
  return ctx.sync.putAccountData(userId, roomId, type, content);
}

/** A user's account data of one type (roomId '' for global), or null. */
export function getAccountData(ctx: Pick<ClientContext, 'sync'>, userId: string, roomId: string, type: string): Promise<Record<string, unknown> | null> {
  return ctx.sync.clientData.accountData(userId, roomId, type);
}

/** All of a user's account data in one room, as events `{type, content}` (for a room's initialSync). */
export async function roomAccountDataEvents(ctx: Pick<ClientContext, 'sync'>, userId: string, roomId: string): Promise<{ type: string; content: Record<string, unknown> }[]> {
  const rows = await ctx.sync.clientData.roomAccountData(userId, [roomId], Number.MAX_SAFE_INTEGER);
  return rows.map((r) => ({ type: r.type, content: r.content }));
}

interface Params {
  userId: string;
  roomId?: string;
  type: string;
}

export function registerAccountDataRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts, { guests: true });

  /** The target of a request, checked: well-formed IDs and type (400), and the caller's own (403). */
  function target(req: FastifyRequest): { userId: string; roomId: string; type: string } {
    const { userId } = sessionOf(req);
    const p = req.params as Params;
    if (!isValidUserId(p.userId)) throw invalidParam(`malformed user ID ${p.userId}`);
    if (p.roomId !== undefined && !isValidRoomId(p.roomId)) throw invalidParam(`${p.roomId} is not a valid room ID`);
    if (p.type === '' || p.type.length > MAX_ACCOUNT_DATA_TYPE_LENGTH) throw invalidParam(`the account data type must be 1 to ${MAX_ACCOUNT_DATA_TYPE_LENGTH} characters`);
    if (p.userId !== userId) throw forbidden('you can only use your own account data');
    return { userId, roomId: p.roomId ?? '', type: p.type };
  }

  for (const path of ['/user/:userId/account_data/:type', '/user/:userId/rooms/:roomId/account_data/:type']) {
    clientRoute(app, {
      method: 'GET',
      path,
      preHandler: auth,
      handler: async (req) => {
        const { userId, roomId, type } = target(req);
        const content = await ctx.sync.clientData.accountData(userId, roomId, type);
        if (content === null) throw notFound(roomId === '' ? 'no account data of that type' : 'no account data of that type for this room');
        return content;
      },
    });

    clientRoute(app, {
      method: 'PUT',
      path,
      // Any JSON object (app.ts answers M_NOT_JSON / M_BAD_JSON for anything else).
      schema: { body: { type: 'object' } },
      preHandler: auth,
      handler: async (req) => {
        const { userId, roomId, type } = target(req);
        if (SERVER_CONTROLLED.has(type)) throw new MatrixError(405, 'M_BAD_JSON', `cannot set ${type} through this API`);
        // A number JSON.parse read as ±Infinity (1e999) would be stored as null: refuse it.
        if (!finiteNumbers(req.body)) throw badJson('numbers must be finite');
        await ctx.sync.putAccountData(userId, roomId, type, req.body as Record<string, unknown>);
        return {};
      },
    });
  }
}

/** Whether every number in a parsed JSON value is finite. */
function finiteNumbers(value: unknown): boolean {
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(finiteNumbers);
  if (typeof value === 'object' && value !== null) return Object.values(value).every(finiteNumbers);
  return true;
}
