// The operator API under /_peekd/admin/v1, behind PEEKD_ADMIN_TOKEN (off when unset).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RoomCommand } from '../../actors/commands.ts';
import type { Peekd } from '../../peekd.ts';
import { MatrixError, badJson } from '../errors.ts';
import { bearerToken, secretsEqual } from '../secrets.ts';
import { auditProjection } from '../../projections/audit.ts';
import { queryAudit, parseAuditQuery } from '../../projections/auditQuery.ts';
import { replayProjections, selectReadModels, verifyProjections } from '../../projections/rebuild.ts';
import { settled } from '../../projections/settled.ts';
import { validateCommand } from '../../actors/validateCommand.ts';
import { parseLivePeeksQuery, projectionPositions, queryLivePeeks, shardMap } from './liveQueries.ts';
import { registerAdminView } from './view.ts';

/**
 * Longest the audit waits for the peek events this process acknowledged: a hurried group
 * commit takes milliseconds; a projection that lags is answered as it stands.
 */
export const AUDIT_SETTLE_MS = 1_000;

/** An operator's command ID: 1–255 visible ASCII characters (no spaces, no control characters). */
const COMMAND_ID = /^[\x21-\x7e]{1,255}$/;

export function registerAdmin(app: FastifyInstance, peekd: Peekd): void {
  const token = peekd.config.adminToken;
  const guard = async (req: FastifyRequest) => {
    if (!token) throw new MatrixError(404, 'M_UNRECOGNIZED', 'the admin API is off (set PEEKD_ADMIN_TOKEN)');
    // The header only: a token in the query string ends up in proxies' access logs.
    const given = bearerToken(req.headers);
    if (!given) {
      const inQuery = typeof (req.query as Record<string, unknown> | undefined)?.access_token === 'string';
      throw new MatrixError(401, 'M_MISSING_TOKEN', inQuery ? 'the admin API takes its token from the Authorization header only' : 'missing admin token');
    }
    if (!secretsEqual(given, token)) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'unknown admin token');
  };

  /** The internal command API: send one command to its room actor. */
  app.post('/_peekd/admin/v1/commands', { preHandler: guard }, async (req) => {
    const body = req.body as Partial<RoomCommand> & { commandId?: string };
    if (!body || typeof body !== 'object' || typeof body.type !== 'string' || typeof body.roomId !== 'string') {
      throw badJson('a command needs a string `type` and `roomId`');
    }
    const { commandId, ...command } = body;
    // It becomes the envelope's JetStream message ID, a NATS header: visible ASCII only.
    if (commandId !== undefined && (typeof commandId !== 'string' || !COMMAND_ID.test(commandId))) throw badJson('commandId must be 1–255 visible ASCII characters');
    // The command comes as JSON, not from typed code: a shape the checks cannot even read is M_BAD_JSON.
    let invalid;
    try {
      invalid = validateCommand(command as RoomCommand);
    } catch {
      throw badJson(`a ${body.type} command of the wrong shape`);
    }
    if (invalid) throw invalid;
    const result = await peekd.bus.send(command as RoomCommand, commandId);
    await settled(peekd.waitForProjections, result, 'all');
    return {
      peek_events: result.peekEvents.map((e) => ({ seq: e.seq, ...e.event })),
      room_events: result.roomEvents.map((e) => ({ seq: e.seq, event_id: e.event.eventId, type: e.event.pdu.type })),
      existing_event_id: result.existingEventId,
    };
  });

  /**
   * Replay or verify in this process (the way to do it with the embedded PGlite database).
   * The projections of one stream are rebuilt together, from one read of it; the answer
   * lists them in the order selected.
   */
  app.post('/_peekd/admin/v1/replay', { preHandler: guard }, async (req) => {
    const { projection } = (req.query as { projection?: string }) ?? {};
    const deps = { db: peekd.database.db, nc: peekd.nc, naming: peekd.naming };
    const results = await replayProjections(deps, selectReadModels(projection));
    return { replayed: results };
  });

  app.post('/_peekd/admin/v1/verify', { preHandler: guard }, async (req, reply) => {
    const { projection } = (req.query as { projection?: string }) ?? {};
    const deps = { db: peekd.database.db, nc: peekd.nc, naming: peekd.naming };
    const results = await verifyProjections(deps, selectReadModels(projection));
    const equal = results.every((r) => r.equal);
    return reply.code(200).send({ equal, projections: results });
  });

  app.get('/_peekd/admin/v1/audit', { preHandler: guard }, async (req) => {
    const query = parseAuditQuery(req.query as Record<string, string | undefined>);
    // A peek this process answered shows at once: the wait hurries the audit projection's
    // group commit (PEEKD_PROJECTION_LINGER_MS). The audit is also how an operator looks at a
    // projection that lags, so it never waits long and never answers 503 for it.
    const { peeks } = peekd.client.barrier.acknowledged();
    await peekd.waitForProjections('peeks', peeks, [auditProjection.name], Math.min(AUDIT_SETTLE_MS, peekd.config.projectionWaitMs)).catch(() => undefined);
    return queryAudit(peekd.database.db, query);
  });

  /** Live peeks (device, inbound, outbound) from the projection tables, newest first, with totals per kind. */
  app.get('/_peekd/admin/v1/peeks', { preHandler: guard }, async (req) => {
    const query = parseLivePeeksQuery(req.query as Record<string, string | undefined>);
    // Read your writes, as the client API does: a peek this process acknowledged shows.
    await peekd.client.barrier.forReads();
    return queryLivePeeks(peekd.database.db, query);
  });

  /** Who holds each shard (and job), and how long ago each lease was last written. */
  app.get('/_peekd/admin/v1/shards', { preHandler: guard }, async () => {
    return shardMap({ config: peekd.config, nc: peekd.nc, naming: peekd.naming, hostId: peekd.hostId });
  });

  /** Each projection's committed position against the head of its stream. */
  app.get('/_peekd/admin/v1/projections', { preHandler: guard }, async () => {
    return projectionPositions({ db: peekd.database.db, nc: peekd.nc, naming: peekd.naming, projections: peekd.projections });
  });

  // The operator's page (static; its data comes from the endpoints above, with the token).
  registerAdminView(app, { enabled: Boolean(token), logger: peekd.logger });
}
