// MSC2753 peeking: POST /peek/{roomIdOrAlias} and POST /rooms/{roomId}/unpeek.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BadStateError } from '../../actors/errors';
import type { PeekEndReason } from '../../events/peekEvents';
import { isValidServerName, serverOf } from '../../events/ids';
import { MatrixError, invalidParam, limitExceeded } from '../errors';
import { requireAuth, sessionOf } from './auth';
import type { ClientContext } from './context';
import { PEEK_PREFIXES, clientRoute } from './prefixes';
import { requireRoomId, resolveRoomIdOrAlias } from './resolveRoom';
import { bearerToken } from '../secrets';
import { settled } from '../../projections/settled';

const peekBody = {
  type: 'object',
  properties: { servers: { type: 'array', items: { type: 'string' }, maxItems: 50 } },
} as const;

/** Ends every live peek of a device (logout: `device_removed`). */
export async function endDevicePeeks(ctx: ClientContext, userId: string, deviceId: string, reason: Extract<PeekEndReason, 'unpeeked' | 'device_removed'>): Promise<void> {
  const rooms = await ctx.peeks.liveRoomsOfDevice(userId, deviceId);
  let last = 0;
  for (const roomId of rooms) {
    try {
      const r = await ctx.bus.send({ type: 'StopDevicePeek', roomId, userId, deviceId, reason });
      last = Math.max(last, r.peekEvents.at(-1)?.seq ?? 0);
    } catch (err) {
      if (!(err instanceof BadStateError)) throw err; // already ended: nothing to do
    }
  }
  if (last) await ctx.waitForProjections('peeks', last);
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
      config: { rateLimit },
      preHandler: auth,
      handler: async (req) => {
        const { userId, deviceId } = sessionOf(req);
        const raw = (req.params as { roomIdOrAlias: string }).roomIdOrAlias;
        const body = (req.body ?? {}) as { servers?: string[] };
        const q = req.query as { server_name?: string | string[] };
        const servers = [...(body.servers ?? []), ...(q.server_name === undefined ? [] : Array.isArray(q.server_name) ? q.server_name : [q.server_name])];
        if (servers.some((s) => !isValidServerName(s))) throw invalidParam('servers must be server names');
        const { roomId, servers: candidates } = await resolveRoomIdOrAlias(ctx, raw, servers);
        const live = (await ctx.sync.devicePeeks(userId, deviceId)).filter((p) => p.endedSeq === null);
        if (!live.some((p) => p.roomId === roomId) && live.length >= ctx.config.maxPeeksPerDevice) {
          throw limitExceeded(60_000, `a device may peek at most ${ctx.config.maxPeeksPerDevice} rooms`);
        }
        if (serverOf(roomId) !== ctx.config.serverName) {
          if (!ctx.remote) throw new MatrixError(404, 'M_NOT_FOUND', 'peeking rooms on other servers is not enabled');
          await ctx.remote.ensureOutboundPeek(roomId, candidates);
        }
        const result = await ctx.bus.send({ type: 'StartDevicePeek', roomId, userId, deviceId });
        const last = result.peekEvents.at(-1);
        if (!last || last.event.type === 'PeekExpired' || last.event.expiresAt === undefined) {
          throw new MatrixError(500, 'M_UNKNOWN', 'the peek did not start');
        }
        // Read your writes: the device's next /sync must show the room.
        await ctx.waitForProjections('peeks', last.seq);
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
      preHandler: auth,
      handler: async (req) => {
        const { userId, deviceId } = sessionOf(req);
        const roomId = requireRoomId((req.params as { roomId: string }).roomId);
        await settled(ctx.waitForProjections, await ctx.bus.send({ type: 'StopDevicePeek', roomId, userId, deviceId, reason: 'unpeeked' }));
        return {};
      },
    },
    PEEK_PREFIXES,
  );
}
