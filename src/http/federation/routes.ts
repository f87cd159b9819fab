// The server-server API: keys, version, MSC2444 peeks (inbound), /send, directory query.
import type { FastifyInstance } from 'fastify';
import { commandIdFor } from '../../requestContext.ts';
import { and, count, eq } from 'drizzle-orm';
import { DomainError, NotFoundError } from '../../actors/errors.ts';
import { isValidPeekId, isValidRoomAlias, isValidRoomId, serverOf } from '../../events/ids.ts';
import type { FederationContext } from '../../federation/context.ts';
import { buildSnapshot } from '../../federation/snapshot.ts';
import { checkPdu } from '../../federation/verifyPdu.ts';
import { eventIdForPdu } from '../../crypto/index.ts';
import { serverAclAllows } from '../../actors/serverAcl.ts';
import { RoomReader } from '../../syncapi/roomReader.ts';
import { federationsenderInboundPeeks, roomAliases } from '../../store/schema.ts';
import { MatrixError, badJson, invalidParam, limitExceeded, notFound } from '../errors.ts';
import { originOf, requireServerAuth } from './auth.ts';
import type { ReceivedPdu } from '../../actors/commands.ts';
import type { Pdu } from '../../events/roomEvents.ts';
import { settled } from '../../projections/settled.ts';

export const PEEKD_VERSION = '0.1.0';

function peekParams(params: unknown): { roomId: string; peekId: string } {
  const { roomId, peekId } = params as { roomId: string; peekId: string };
  if (!isValidRoomId(roomId)) throw invalidParam(`malformed room ID ${roomId}`);
  if (!isValidPeekId(peekId, roomId)) throw new MatrixError(400, 'M_UNRECOGNIZED', 'peek IDs are 1–8 characters of [0-9A-Za-z.=_-]');
  return { roomId, peekId };
}

/** The event ID a PDU would have (nothing verified): to key a refusal in the /send answer. */
function unverifiedEventId(raw: unknown, roomVersion: string): string | undefined {
  try {
    return eventIdForPdu(raw as object, roomVersion);
  } catch {
    return undefined;
  }
}

/**
 * The peeks a /send's `expired_peeks` ends, each checked before any of the transaction is
 * taken. A malformed entry (a room ID or peek ID outside their grammar) refuses the whole
 * transaction with 400 M_BAD_JSON, as the server-server API does with any malformed /send
 * body: only PDUs get a verdict each (the answer's `pdus`), an entry has no place to be
 * refused in, and the sender, which retries until a 200, sees its mistake instead of having
 * it dropped unseen. Nothing of the transaction has reached a room by then.
 */
function expiredPeeksOf(entries: { room_id: string; peek_id: string }[] | undefined): { roomId: string; peekId: string }[] {
  // (The body schema has made each entry an object with both as strings.)
  return (entries ?? []).map(({ room_id: roomId, peek_id: peekId }) => {
    if (!isValidRoomId(roomId)) throw badJson('an expired_peeks entry holds a malformed room_id');
    if (!isValidPeekId(peekId, roomId)) throw badJson('an expired_peeks entry holds a malformed peek_id');
    return { roomId, peekId };
  });
}

function versionsOf(ver: unknown): string[] {
  if (ver === undefined) return [];
  return (Array.isArray(ver) ? ver : [ver]).filter((v): v is string => typeof v === 'string');
}

export function registerFederationRoutes(app: FastifyInstance, ctx: FederationContext): void {
  const auth = requireServerAuth(ctx);
  const seenTxns = new Map<string, unknown>();
  const rooms = new RoomReader(ctx.db);
  /** 403 when the room's server ACL shuts `origin` out. */
  const checkAcl = async (roomId: string, origin: string) => {
    if (!serverAclAllows((await rooms.stateContent(roomId, 'm.room.server_acl')) ?? undefined, origin)) {
      throw new MatrixError(403, 'M_FORBIDDEN', `the room's server ACL does not allow ${origin}`);
    }
  };

  app.get('/_matrix/key/v2/server', async () => ctx.ownKeys.response());
  app.get('/_matrix/key/v2/server/:keyId', async () => ctx.ownKeys.response());
  app.get('/_matrix/federation/v1/version', async () => ({ server: { name: 'peekd', version: PEEKD_VERSION } }));

  /** PDUs after a gap in what the host sent come with the events between (RemoteHistory.withMissingEvents). */
  const withMissingEvents = (roomId: string, origin: string, pdus: ReceivedPdu[]): Promise<ReceivedPdu[]> =>
    ctx.history ? ctx.history.withMissingEvents(roomId, origin, pdus) : Promise.resolve(pdus);

  /**
   * New peeks of one server start one at a time, so that the per-server cap holds against a
   * concurrent burst: each one counts the peeks the ones before it made. (Within this
   * process; with several HTTP processes each holds the line for what reaches it.)
   */
  const peekStarts = new Map<string, Promise<unknown>>();
  const oneAtATime = <T>(origin: string, run: () => Promise<T>): Promise<T> => {
    const before = peekStarts.get(origin) ?? Promise.resolve();
    const mine = before.catch(() => undefined).then(run);
    const tail = mine.catch(() => undefined);
    peekStarts.set(origin, tail);
    void tail.then(() => {
      if (peekStarts.get(origin) === tail) peekStarts.delete(origin);
    });
    return mine;
  };

  app.put('/_matrix/federation/v1/peek/:roomId/:peekId', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const origin = originOf(req);
    const { roomId, peekId } = peekParams(req.params);
    const roomVersions = versionsOf((req.query as { ver?: unknown }).ver);
    await checkAcl(roomId, origin);
    return oneAtATime(origin, () => startOrRenewPeek(req, origin, roomId, peekId, roomVersions));
  });

  async function startOrRenewPeek(req: { id: string }, origin: string, roomId: string, peekId: string, roomVersions: string[]) {
    const t = federationsenderInboundPeeks;
    const [own] = await ctx.db
      .select({ n: count() })
      .from(t)
      .where(and(eq(t.roomId, roomId), eq(t.serverName, origin), eq(t.peekId, peekId)));
    if (Number(own?.n ?? 0) === 0) {
      const [live] = await ctx.db.select({ n: count() }).from(t).where(eq(t.serverName, origin));
      if (Number(live?.n ?? 0) >= ctx.config.maxInboundPeeksPerServer) {
        throw limitExceeded(60_000, `${origin} holds ${ctx.config.maxInboundPeeksPerServer} peeks here already`);
      }
    }
    const result = await ctx.bus.send({ type: 'StartInboundPeek', roomId, server: origin, peekId, roomVersions }, commandIdFor(req));
    const room = result.room;
    const event = result.peekEvents.at(-1);
    if (!room || !event || event.event.type === 'PeekExpired') throw new NotFoundError(`unknown room ${roomId}`);
    const roomSeq = event.event.type === 'PeekStarted' ? (event.event.roomSeq ?? room.latestSeq) : room.latestSeq;
    // The federation tables too (the cap, renew and DELETE read them): read your writes.
    await Promise.all([ctx.waitForProjections('rooms', roomSeq), ctx.waitForProjections('peeks', event.seq, 'all')]);
    return buildSnapshot(ctx.db, roomId, room.roomVersion, roomSeq, ctx.config.inboundRenewalIntervalMs);
  }

  app.post('/_matrix/federation/v1/peek/:roomId/:peekId/renew', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const origin = originOf(req);
    const { roomId, peekId } = peekParams(req.params);
    await checkAcl(roomId, origin);
    await settled(ctx.waitForProjections, await ctx.bus.send({ type: 'RenewInboundPeek', roomId, server: origin, peekId }, commandIdFor(req)), 'all');
    return { renewal_interval: ctx.config.inboundRenewalIntervalMs };
  });

  app.delete('/_matrix/federation/v1/peek/:roomId/:peekId', { preValidation: auth }, async (req) => {
    const origin = originOf(req);
    const { roomId, peekId } = peekParams(req.params);
    await settled(ctx.waitForProjections, await ctx.bus.send({ type: 'DeleteInboundPeek', roomId, server: origin, peekId }, commandIdFor(req)), 'all');
    return {};
  });

  app.get('/_matrix/federation/v1/query/directory', { preValidation: auth, config: { barrier: true } }, async (req) => {
    const alias = (req.query as { room_alias?: string }).room_alias;
    if (typeof alias !== 'string' || !isValidRoomAlias(alias)) throw invalidParam('room_alias must be a room alias');
    if (serverOf(alias) !== ctx.config.serverName) throw notFound('that alias is not on this server');
    const [row] = await ctx.db.select().from(roomAliases).where(eq(roomAliases.alias, alias));
    if (!row) throw notFound(`unknown room alias ${alias}`);
    return { room_id: row.roomId, servers: [ctx.config.serverName] };
  });

  app.put(
    '/_matrix/federation/v1/send/:txnId',
    {
      preValidation: auth,
      schema: {
        // The whole transaction is checked before any of it is taken: a bad entry anywhere
        // refuses it all, so nothing is half-written.
        body: {
          type: 'object',
          required: ['origin', 'origin_server_ts', 'pdus'],
          properties: {
            origin: { type: 'string', minLength: 1, maxLength: 255 },
            origin_server_ts: { type: 'integer', minimum: 0 },
            pdus: { type: 'array', maxItems: 50 },
            edus: { type: 'array', maxItems: 100 },
            expired_peeks: {
              type: 'array',
              maxItems: 1000,
              items: {
                type: 'object',
                required: ['room_id', 'peek_id'],
                properties: { room_id: { type: 'string', maxLength: 255 }, peek_id: { type: 'string', maxLength: 255 } },
              },
            },
          },
        },
      },
    },
    async (req) => {
      const origin = originOf(req);
      const txnKey = `${origin}\u0000${(req.params as { txnId: string }).txnId}`;
      if (seenTxns.has(txnKey)) return seenTxns.get(txnKey);
      const body = req.body as { pdus?: unknown[]; expired_peeks?: { room_id: string; peek_id: string }[] };
      const expiredPeeks = expiredPeeksOf(body.expired_peeks);
      const results: Record<string, Record<string, string>> = {};
      const byRoom = new Map<string, ReceivedPdu[]>();
      const accepted = new Map<string, boolean>();
      const versions = new Map<string, string>();
      /** The room's version as held here (read once per room per transaction). */
      const versionOf = async (roomId: string): Promise<string> => {
        let version = versions.get(roomId);
        if (version === undefined) {
          const create = await rooms.stateContent(roomId, 'm.room.create');
          version = typeof create?.room_version === 'string' ? create.room_version : '10';
          versions.set(roomId, version);
        }
        return version;
      };
      for (const raw of body.pdus ?? []) {
        const roomId = (raw as { room_id?: unknown })?.room_id;
        // Refusals are keyed by the event ID the PDU would have (the answer's `pdus` is keyed
        // by event ID); only a PDU too malformed to have one gets a placeholder key.
        // A copy of a PDU taken in this transaction (same event ID, other content) does not
        // overwrite its answer.
        const refuse = (error: string, version = '10') => {
          const id = unverifiedEventId(raw, version) ?? `unknown-${Object.keys(results).length}`;
          if (!(id in results)) results[id] = { error };
        };
        if (typeof roomId !== 'string' || !isValidRoomId(roomId)) {
          refuse('not a PDU of a valid room ID');
          continue;
        }
        if (serverOf(roomId) === ctx.config.serverName) {
          // We host it: its events are made here, never taken from another server.
          refuse(`${ctx.config.serverName} hosts ${roomId} and takes no events of it over federation`, await versionOf(roomId));
          continue;
        }
        // Only the server we peek the room through sends us its events (after the
        // snapshot of a peek being set up is in).
        if (!accepted.has(roomId)) {
          await ctx.outbound?.settled(roomId);
          accepted.set(roomId, (await ctx.outbound?.accepts(origin, roomId)) ?? false);
        }
        const version = await versionOf(roomId);
        // Unwanted PDUs are refused before checkPdu: checking a signature may fetch the
        // signer's keys, and a PDU we would drop anyway must not make us fetch anything.
        if (!accepted.get(roomId)) {
          refuse(`${ctx.config.serverName} does not peek ${roomId} through ${origin}`, version);
          continue;
        }
        const checked = await checkPdu(raw, version, ctx.keyRing);
        if (!checked.ok) {
          refuse(checked.error, version);
          continue;
        }
        results[checked.eventId] = {};
        const list = byRoom.get(roomId) ?? [];
        list.push({ eventId: checked.eventId, pdu: checked.pdu as Pdu });
        byRoom.set(roomId, list);
      }
      for (const [roomId, received] of byRoom) {
        const pdus = await withMissingEvents(roomId, origin, received);
        try {
          const r = await ctx.bus.send({ type: 'ReceivePdus', roomId, origin, pdus }, commandIdFor(req));
          const last = r.roomEvents.at(-1);
          if (last) await ctx.waitForProjections('rooms', last.seq);
        } catch (err) {
          if (!(err instanceof DomainError)) throw err;
          for (const p of pdus) results[p.eventId] = { error: err.message };
        }
      }
      for (const { roomId, peekId } of expiredPeeks) await ctx.outbound?.remoteExpired(origin, roomId, peekId);
      const response = { pdus: results };
      seenTxns.set(txnKey, response);
      if (seenTxns.size > 10_000) seenTxns.delete(seenTxns.keys().next().value!);
      return response;
    },
  );
}
