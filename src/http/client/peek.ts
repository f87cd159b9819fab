// MSC2753 peeking: POST /peek/{roomIdOrAlias} and POST /rooms/{roomId}/unpeek.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BadStateError } from '../../actors/errors.ts';
import type { PeekEndReason } from '../../events/peekEvents.ts';
import { isValidServerName, serverOf } from '../../events/ids.ts';
import { MatrixError, invalidParam, limitExceeded } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import { clientWrite } from './clientWrite.ts';
import type { ClientContext } from './context.ts';
import { PEEK_PREFIXES, clientRoute } from './prefixes.ts';
import { requireRoomId, resolveRoomIdOrAlias } from './resolveRoom.ts';
import { bearerToken } from '../secrets.ts';

const peekBody = {
  type: 'object',
  properties: { servers: { type: 'array', items: { type: 'string' }, maxItems: 50 } },
} as const;

/** Ends every live peek of a device (logout: `device_removed`). */
export async function endDevicePeeks(ctx: ClientContext, req: { id: string }, userId: string, deviceId: string, reason: Extract<PeekEndReason, 'unpeeked' | 'device_removed'>): Promise<void> {
  // The device's own peeks, its latest /peek included — as far as the projections show
  // them in time: the device is already gone, so ending what is visible beats a 503.
  await ctx.barrier.forSession(userId, deviceId).catch(() => undefined);
  const rooms = await ctx.peeks.liveRoomsOfDevice(userId, deviceId);
  for (const roomId of rooms) {
    try {
      await clientWrite(ctx, req, { userId, deviceId }, { type: 'StopDevicePeek', roomId, userId, deviceId, reason });
    } catch (err) {
      if (!(err instanceof BadStateError)) throw err; // already ended: nothing to do
    }
  }
}

/**
 * A device may peek at most `maxPeeksPerDevice` rooms. The count is read without waiting
 * for the device's latest peeks to be projected when even counting each of those as a new
 * peek stays under the cap; only near the cap does it wait to count exactly.
 */
async function checkPeekCap(ctx: ClientContext, userId: string, deviceId: string, roomId: string): Promise<void> {
  const cap = ctx.config.maxPeeksPerDevice;
  const count = async () => {
    const live = (await ctx.sync.devicePeeks(userId, deviceId)).filter((p) => p.endedSeq === null);
    return live.some((p) => p.roomId === roomId) ? -1 : live.length;
  };
  const unseen = ctx.barrier.unseenPeekWrites(userId, deviceId);
  const before = await count();
  if (before < 0 || before + unseen < cap) return;
  if (unseen > 0) await ctx.barrier.forSession(userId, deviceId);
  if ((unseen > 0 ? await count() : before) >= cap) throw limitExceeded(60_000, `a device may peek at most ${cap} rooms`);
}

export function registerPeekRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  // Per device: a burst of `peekRateBurst` calls per window, refilled at `peekRatePerSecond`.
  const rateLimit = {
    max: ctx.config.peekRateBurst,
    timeWindow: Math.ceil((ctx.config.peekRateBurst / ctx.config.peekRatePerSecond) * 1000),
    keyGenerator: async (req: FastifyRequest) => {
      const token = bearerToken(req.headers, req.query);
      const session = token ? await ctx.accounts.authenticate(token) : null;
      return session ? `peek\u0000${session.userId}\u0000${session.deviceId}` : `peek-ip\u0000${req.ip}`;
    },
  };

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
        const { userId, deviceId } = sessionOf(req);
        const raw = (req.params as { roomIdOrAlias: string }).roomIdOrAlias;
        const body = (req.body ?? {}) as { servers?: string[] };
        const q = req.query as { server_name?: string | string[] };
        const servers = [...(body.servers ?? []), ...(q.server_name === undefined ? [] : Array.isArray(q.server_name) ? q.server_name : [q.server_name])];
        if (servers.some((s) => !isValidServerName(s))) throw invalidParam('servers must be server names');
        const { roomId, servers: candidates } = await resolveRoomIdOrAlias(ctx, raw, servers);
        await checkPeekCap(ctx, userId, deviceId, roomId);
        if (serverOf(roomId) !== ctx.config.serverName) {
          if (!ctx.remote) throw new MatrixError(404, 'M_NOT_FOUND', 'peeking rooms on other servers is not enabled');
          await ctx.remote.ensureOutboundPeek(roomId, candidates);
        }
        // Read your writes: the device's next /sync waits for this position (readBarrier.ts).
        const result = await clientWrite(ctx, req, { userId, deviceId }, { type: 'StartDevicePeek', roomId, userId, deviceId });
        const last = result.peekEvents.at(-1);
        if (!last || last.event.type === 'PeekExpired' || last.event.expiresAt === undefined) {
          throw new MatrixError(500, 'M_UNKNOWN', 'the peek did not start');
        }
        return { room_id: roomId, peek_expiry_ts: last.event.expiresAt };
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
