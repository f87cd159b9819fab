// GET /sync and the filter endpoints.
import { randomBytes } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { rowsOf } from '../../store/db.ts';
import { isValidUserId } from '../../events/ids.ts';
import { unstorableString } from '../../matrix/storable.ts';
import { filterProblem } from '../../syncapi/filterShape.ts';
import { jsonFilterParam } from '../jsonBody.ts';
import { filters } from '../../store/schema.ts';
import { DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT, syncFilterOf } from '../../syncapi/syncFilter.ts';
import { parseSyncToken } from '../../syncapi/syncToken.ts';
import { badJson, forbidden, invalidParam, MatrixError, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { admitSlot, holdConnection, writeSlot } from '../../syncapi/writeSlices.ts';
import { hangupOnClose } from '../../syncapi/hangup.ts';
import { clientRoute } from './prefixes.ts';

const MAX_SYNC_TIMEOUT_MS = 5 * 60_000;

function timelineLimitOf(filter: unknown): number {
  const limit = (filter as { room?: { timeline?: { limit?: unknown } } } | null)?.room?.timeline?.limit;
  if (limit === undefined) return DEFAULT_TIMELINE_LIMIT;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0) throw badJson('room.timeline.limit must be a non-negative integer');
  return Math.min(limit, MAX_TIMELINE_LIMIT);
}

export function registerSyncRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);
  // Guests may sync (the Guest access module); filters stay with full accounts.
  const syncAuth = requireAuth(ctx.accounts, { guests: true });

  async function loadFilter(userId: string, raw: string | undefined): Promise<unknown> {
    if (raw === undefined || raw === '') return null;
    if (raw.trim().startsWith('{')) {
      const inline = jsonFilterParam(raw, filterProblem);
      // Its escapes may spell what Postgres cannot take (the sync query carries the filter's
      // types and senders): refused as in a stored filter's body.
      const bad = unstorableString(inline);
      if (bad) throw badJson(`filter: holds ${bad}, which is not supported`);
      return inline;
    }
    const [row] = await ctx.db
      .select()
      .from(filters)
      .where(and(eq(filters.userId, userId), eq(filters.filterId, raw)));
    if (!row) throw invalidParam(`unknown filter ${raw}`);
    return row.filter;
  }

  clientRoute(app, {
    method: 'GET',
    path: '/sync',
    // During a burst of wake-ups, new long-polls (mostly the re-polls of the devices answered
    // first) wait until every answer is out (src/syncapi/writeSlices.ts).
    onRequest: (_req, _reply, done) => {
      const slot = admitSlot();
      if (slot) void slot.then(() => done());
      else done();
    },
    preHandler: syncAuth,
    handler: async (req, reply) => {
      const { userId, deviceId } = sessionOf(req);
      const q = req.query as { since?: string; timeout?: string; full_state?: string; filter?: string };
      let since;
      if (q.since !== undefined && q.since !== '') {
        since = parseSyncToken(q.since);
        if (!since) throw invalidParam('unknown since token');
      }
      const timeoutMs = q.timeout === undefined ? 0 : Number(q.timeout);
      if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw invalidParam('timeout must be a non-negative number of ms');
      const filter = await loadFilter(userId, q.filter);
      ctx.remote?.deviceSynced(userId, deviceId);
      // A client that goes away ends its long-poll.
      const hangup = hangupOnClose(req.raw, reply.raw);
      const answer = await ctx.sync.sync({
        userId,
        deviceId,
        since,
        timeoutMs: Math.min(timeoutMs, MAX_SYNC_TIMEOUT_MS),
        fullState: q.full_state === 'true',
        timelineLimit: timelineLimitOf(filter),
        filter: filter === null ? undefined : syncFilterOf(filter),
        signal: hangup,
      });
      // A device that sat in a long-poll is active until it returns, not only when it began.
      ctx.remote?.deviceSynced(userId, deviceId);
      // Serialised once for every device that shares the answer (src/syncapi/sync.ts), and
      // written a slice per event-loop turn when many are ready at once.
      const slot = writeSlot();
      if (slot) await slot;
      reply.type('application/json').send(answer.body());
      // During a burst, the device's next request stays unread until every answer is out.
      holdConnection(req.raw.socket);
      return reply;
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/user/:userId/filter',
    schema: { body: { type: 'object' } },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const target = (req.params as { userId: string }).userId;
      if (!isValidUserId(target)) throw invalidParam('malformed user ID');
      if (target !== userId) throw forbidden('you can only create filters for yourself');
      const problem = filterProblem(req.body);
      if (problem) throw badJson(`filter: ${problem}`);
      timelineLimitOf(req.body);
      // Clients upload the same filter at every start: an identical one answers its ID again.
      const body = JSON.stringify(req.body);
      const same = await ctx.db
        .select({ filterId: filters.filterId })
        .from(filters)
        .where(and(eq(filters.userId, userId), sql`${filters.filter} = ${body}::jsonb`))
        .limit(1);
      if (same[0]) return { filter_id: same[0].filterId };
      for (let attempt = 0; attempt < 5; attempt++) {
        const filterId = String(parseInt(randomBytes(4).toString('hex'), 16));
        // One statement counts and inserts, so a burst of uploads cannot pass the cap by much.
        const inserted = await ctx.db.execute(sql`
          INSERT INTO ${filters} (user_id, filter_id, filter)
          SELECT ${userId}, ${filterId}, ${body}::jsonb
          WHERE (SELECT count(*) FROM ${filters} WHERE user_id = ${userId}) < ${ctx.config.maxFiltersPerUser}
          ON CONFLICT DO NOTHING
          RETURNING filter_id`);
        if (rowsOf(inserted).length === 1) return { filter_id: filterId };
        const n = Number(rowsOf<{ n: number }>(await ctx.db.execute(sql`SELECT count(*)::int AS n FROM ${filters} WHERE user_id = ${userId}`))[0]?.n ?? 0);
        if (n >= ctx.config.maxFiltersPerUser) {
          throw new MatrixError(403, 'M_RESOURCE_LIMIT_EXCEEDED', `a user may store at most ${ctx.config.maxFiltersPerUser} filters`);
        }
      }
      throw new MatrixError(503, 'M_UNKNOWN', 'could not allocate a filter ID; try again', { retry_after_ms: 100 });
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/user/:userId/filter/:filterId',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const p = req.params as { userId: string; filterId: string };
      if (!isValidUserId(p.userId)) throw invalidParam('malformed user ID');
      if (p.userId !== userId) throw forbidden('you can only read your own filters');
      const [row] = await ctx.db
        .select()
        .from(filters)
        .where(and(eq(filters.userId, userId), eq(filters.filterId, p.filterId)));
      if (!row) throw notFound('no such filter');
      return row.filter;
    },
  });
}
