// A device peek (MSC2753) as the client API starts and renews it. Two ways in: POST /peek
// (peek.ts), and a legacy room preview — GET /rooms/{roomId}/initialSync starts one and
// every GET /events poll after it keeps it alive (preview.ts). Either way it is the same
// StartDevicePeek command, so the same events in the log (PeekStarted, PeekRenewed, and a
// PeekExpired when it runs out), the same cap, the same audit.
import type { FastifyRequest } from 'fastify';
import type { Session } from '../../clientapi/accounts.ts';
import { serverOf } from '../../events/ids.ts';
import { MatrixError, limitExceeded } from '../errors.ts';
import { bearerToken } from '../secrets.ts';
import { cachedSessionOf } from './auth.ts';
import { clientWrite } from './clientWrite.ts';
import type { ClientContext } from './context.ts';

/**
 * The per-device rate limit of the routes that start peeks: a burst of `peekRateBurst`
 * calls per window, refilled at `peekRatePerSecond` (route config for @fastify/rate-limit).
 */
export function peekRateLimit(ctx: ClientContext, name: string) {
  return {
    max: ctx.config.peekRateBurst,
    timeWindow: Math.ceil((ctx.config.peekRateBurst / ctx.config.peekRatePerSecond) * 1000),
    // Synchronous for a token in the cache (nearly every request); the auth hook reuses the
    // token's hash (cachedSessionOf). Only a cache miss waits for the database.
    keyGenerator: (req: FastifyRequest): string | Promise<string> => {
      const token = bearerToken(req.headers, req.query);
      const key = (session: Session | null) => (session ? `${name}\u0000${session.userId}\u0000${session.deviceId}` : `${name}-ip\u0000${req.ip}`);
      if (!token) return key(null);
      const cached = cachedSessionOf(ctx.accounts, req, token);
      return cached !== undefined ? key(cached) : ctx.accounts.authenticate(token).then(key);
    },
  };
}

/**
 * A device may peek at most `maxPeeksPerDevice` rooms. The count is read without waiting
 * for the device's latest peeks to be projected when even counting each of those as a new
 * peek stays under the cap; only near the cap does it wait to count exactly.
 */
export async function checkPeekCap(ctx: ClientContext, userId: string, deviceId: string, roomId: string): Promise<void> {
  const cap = ctx.config.maxPeeksPerDevice;
  const count = async () => {
    const live = await ctx.sync.liveDevicePeeks(userId, deviceId);
    return live.some((p) => p.roomId === roomId) ? -1 : live.length;
  };
  const unseen = ctx.barrier.unseenPeekWrites(userId, deviceId);
  const before = await count();
  if (before < 0 || before + unseen < cap) return;
  if (unseen > 0) await ctx.barrier.forSession(userId, deviceId);
  if ((unseen > 0 ? await count() : before) >= cap) throw limitExceeded(60_000, `a device may peek at most ${cap} rooms`);
}

/**
 * Starts the device's peek of the room, or renews it when it is live: the cap, the outbound
 * peek for a room hosted elsewhere (`servers`: who may know it), then StartDevicePeek under
 * the request's command ID. Answers the new expiry. Domain errors (the room is not
 * world_readable, is encrypted, the user is joined) reach the client as their Matrix errors.
 */
export async function startDevicePeek(ctx: ClientContext, req: { id: string }, session: Session, roomId: string, servers: string[]): Promise<{ expiresAt: number }> {
  const { userId, deviceId } = session;
  await checkPeekCap(ctx, userId, deviceId, roomId);
  if (serverOf(roomId) !== ctx.config.serverName) {
    if (!ctx.remote) throw new MatrixError(404, 'M_NOT_FOUND', 'peeking rooms on other servers is not enabled');
    await ctx.remote.ensureOutboundPeek(roomId, servers);
  }
  // Read your writes: the device's next read waits for this position (readBarrier.ts).
  const result = await clientWrite(ctx, req, { userId, deviceId }, { type: 'StartDevicePeek', roomId, userId, deviceId });
  const last = result.peekEvents.at(-1);
  if (!last || last.event.type === 'PeekExpired' || last.event.expiresAt === undefined) {
    throw new MatrixError(500, 'M_UNKNOWN', 'the peek did not start');
  }
  return { expiresAt: last.event.expiresAt };
}

/**
 * Keeps a previewing device's peek alive from its polls: starts it again when it has
 * ended, renews it once a quarter of its lifetime has gone by, and otherwise writes
 * nothing — so a device polling a busy room does not append a renewal per message, yet a
 * device that keeps polling (each poll waits at most half a lifetime, see preview.ts)
 * never lets it run out. Answers whether it wrote.
 */
export async function keepDevicePeek(ctx: ClientContext, req: { id: string }, session: Session, roomId: string): Promise<boolean> {
  const now = ctx.clock.now();
  const row = (await ctx.sync.liveDevicePeeks(session.userId, session.deviceId)).find((p) => p.roomId === roomId);
  const live = row !== undefined && (row.expiresAt === null || row.expiresAt > now);
  if (live && (row.expiresAt === null || row.expiresAt - now > (ctx.config.peekLifetimeMs * 3) / 4)) return false;
  await startDevicePeek(ctx, req, session, roomId, [serverOf(roomId)]);
  return true;
}
