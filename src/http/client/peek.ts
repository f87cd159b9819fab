// MSC2753 peeking: POST /peek/{roomIdOrAlias} and POST /rooms/{roomId}/unpeek.
// What starting a peek shares with the room preview (initialSync, /events) is in devicePeek.ts.
import type { FastifyInstance } from 'fastify';
import { BadStateError } from '../../actors/errors.ts';
import type { PeekEndReason } from '../../events/peekEvents.ts';
import { isValidServerName } from '../../events/ids.ts';
import { invalidParam } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import { clientWrite } from './clientWrite.ts';
import type { ClientContext } from './context.ts';
import { peekRateLimit, startDevicePeek } from './devicePeek.ts';
import { PEEK_PREFIXES, clientRoute } from './prefixes.ts';
import { requireRoomId, resolveRoomIdOrAlias } from './resolveRoom.ts';

const peekBody = {
  type: 'object',
  properties: { servers: { type: 'array', items: { type: 'string' }, maxItems: 50 } },
} as const;

/** Ends every live peek of a device (logout: `device_removed`). */
export async function endDevicePeeks(ctx: ClientContext, req: { id: string }, userId: string, deviceId: string, reason: Extract<PeekEndReason, 'unpeeked' | 'device_removed'>): Promise<void> {
  // The device's own peeks, its latest /peek included — as far as the projections show
  // them in time: the device is already gone, so ending what is visible beats a 503.
  await ctx.barrier.forSession(userId, deviceId).catch(() => undefined);
  const rows = await ctx.peeks.liveOfDevice(userId, deviceId);
  for (const { roomId } of rows) {
    try {
      await clientWrite(ctx, req, { userId, deviceId }, { type: 'StopDevicePeek', roomId, userId, deviceId, reason });
    } catch (err) {
      if (!(err instanceof BadStateError)) throw err; // already ended: nothing to do
    }
  }
}

export function registerPeekRoutes(app: FastifyInstance, ctx: ClientContext): void {
  // Guests may peek (the client-server specification's guest access lists peeking).
  const auth = requireAuth(ctx.accounts, { guests: true });
  // Per device: a burst of `peekRateBurst` calls per window, refilled at `peekRatePerSecond`.
  const rateLimit = peekRateLimit(ctx, 'peek');

  clientRoute(
    app,
    {
      method: 'POST',
      path: '/peek/:roomIdOrAlias',
      schema: { body: peekBody },
      // Waits for the device's own writes only (the cap), not for everyone's.
      config: { rateLimit, barrier: false },
      preHandler: auth,
      handler: async (req) => {
        const raw = (req.params as { roomIdOrAlias: string }).roomIdOrAlias;
        const body = (req.body ?? {}) as { servers?: string[] };
        const q = req.query as { server_name?: string | string[] };
        const servers = [...(body.servers ?? []), ...(q.server_name === undefined ? [] : Array.isArray(q.server_name) ? q.server_name : [q.server_name])];
        if (servers.some((s) => !isValidServerName(s))) throw invalidParam('servers must be server names');
        const { roomId, servers: candidates } = await resolveRoomIdOrAlias(ctx, raw, servers);
        const { expiresAt } = await startDevicePeek(ctx, req, sessionOf(req), roomId, candidates);
        return { room_id: roomId, peek_expiry_ts: expiresAt };
      },
    },
    PEEK_PREFIXES,
  );

  clientRoute(
    app,
    {
      method: 'POST',
      path: '/rooms/:roomId/unpeek',
      config: { barrier: false },
      preHandler: auth,
      handler: async (req) => {
        const { userId, deviceId } = sessionOf(req);
        const roomId = requireRoomId((req.params as { roomId: string }).roomId);
        await clientWrite(ctx, req, { userId, deviceId }, { type: 'StopDevicePeek', roomId, userId, deviceId, reason: 'unpeeked' });
        return {};
      },
    },
    PEEK_PREFIXES,
  );
}
