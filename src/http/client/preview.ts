// The legacy room preview (client-server API, "Room previews"), as matrix-js-sdk's
// peekInRoom (Element's preview) uses it: GET /rooms/{roomId}/initialSync for a snapshot,
// then GET /events?room_id=… long-polls for what follows.
//
// For a reader who is not joined, the preview of a world_readable room is a device peek in
// the log, the very one POST /peek starts (devicePeek.ts): initialSync starts it (renews it
// when live), every /events poll keeps it alive, and when the polls stop it runs out at its
// deadline like any peek (PeekExpired timed_out), audited like any peek. Members read
// without a peek; a user who left or was banned reads the room as it was when they went.
// peekd serves /events only in its room form: the event stream of all a user's rooms was
// replaced by /sync long ago.
import { and, eq, gt, lte } from 'drizzle-orm';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Session } from '../../clientapi/accounts.ts';
import { serverOf } from '../../events/ids.ts';
import { accountData, presence, syncapiCurrentState } from '../../store/schema.ts';
import { presenceContent, receiptContent } from '../../syncapi/clientData.ts';
import { clientEvents, type StoredEvent } from '../../syncapi/roomReader.ts';
import { roomEventsAfter } from '../../syncapi/roomStream.ts';
import { MAX_TIMELINE_LIMIT } from '../../syncapi/sync.ts';
import { formatSyncToken, formatTopologicalToken, parseSyncToken, positionOf } from '../../syncapi/syncToken.ts';
import { MatrixError, forbidden, invalidParam } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { keepDevicePeek, peekRateLimit, startDevicePeek } from './devicePeek.ts';
import { clientRoute } from './prefixes.ts';
import { requireRoomId } from './resolveRoom.ts';
import { directoryVisibility } from './publicRooms.ts';
import { hangupOnClose, type Hangup } from '../../syncapi/hangup.ts';

/** Messages an initialSync answers when the client gives no limit. */
const DEFAULT_LIMIT = 10;
/** The longest an /events poll waits (as /sync). */
const MAX_EVENTS_TIMEOUT_MS = 5 * 60_000;
/**
 * How long an /events poll waits when the client names no `timeout`: /events is a
 * long-poll, and clients and test suites that omit the parameter expect one (Synapse
 * waits 30 s too).
 */
const DEFAULT_EVENTS_TIMEOUT_MS = 30_000;
/** Events read per step of an /events poll; one answer holds at most this many. */
const EVENTS_PAGE = 100;
/** Previewing devices whose last `end` is remembered (for a first /events poll without `from`). */
const MAX_CURSORS = 100_000;

/** How the caller reads the room. */
type Access =
  /** Joined: everything, no peek. */
  | { kind: 'member' }
  /** Not joined, the room world_readable and not encrypted: through a device peek. */
  | { kind: 'peek'; membership: string | null }
  /** Left or banned: the room as it was when they went (and what history visibility shows after). */
  | { kind: 'parted'; membership: string; leftAt: number }
  /** Nothing (not readable now). */
  | { kind: 'none' };

const MEMBERSHIPS: ReadonlySet<string> = new Set(['invite', 'join', 'leave', 'ban']);

async function accessOf(ctx: ClientContext, roomId: string, userId: string): Promise<Access> {
  const membership = await ctx.rooms.membership(roomId, userId);
  if (membership === 'join') return { kind: 'member' };
  // Someone who left (or was banned) sees the room as it was when they went, world_readable
  // or not (the RoomInfo of initialSync: "the state of the room when they left it"), as
  // Synapse does; only then does world_readable let a stranger in.
  if (membership === 'leave' || membership === 'ban') {
    const facts = await ctx.rooms.visibilityFacts(roomId, userId);
    const last = facts.membership.at(-1);
    if (last) return { kind: 'parted', membership, leftAt: last.seq };
  }
  const worldReadable = (await ctx.rooms.historyVisibility(roomId)) === 'world_readable';
  const encryption = await ctx.rooms.stateContent(roomId, 'm.room.encryption');
  if (worldReadable && typeof encryption?.algorithm !== 'string') return { kind: 'peek', membership };
  return { kind: 'none' };
}

function parseLimit(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_LIMIT;
  const limit = Number(raw);
  if (raw === '' || !Number.isInteger(limit) || limit < 0) throw invalidParam('limit must be a non-negative integer');
  return Math.min(limit, MAX_TIMELINE_LIMIT);
}

function parseTimeout(raw: string | undefined): number {
  const timeoutMs = raw === undefined ? DEFAULT_EVENTS_TIMEOUT_MS : Number(raw);
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw invalidParam('timeout must be a non-negative number of ms');
  return Math.min(timeoutMs, MAX_EVENTS_TIMEOUT_MS);
}

/** The caller's private data on the room, as `[{type, content}]`. */
async function roomAccountData(ctx: ClientContext, userId: string, roomId: string): Promise<{ type: string; content: unknown }[]> {
  const rows = await ctx.db
    .select({ type: accountData.type, content: accountData.content })
    .from(accountData)
    .where(and(eq(accountData.userId, userId), eq(accountData.roomId, roomId)));
  return rows.map((r) => ({ type: r.type, content: r.content }));
}

/** m.presence events of the room's joined members (those with a presence recorded). */
/** The presence of the room's joined members: all of it, or what changed in (after, upto] of the client-data positions. */
async function membersPresence(ctx: ClientContext, roomId: string, now: number, window?: { after: number; upto: number }): Promise<unknown[]> {
  const rows = await ctx.db
    .select({ p: presence })
    .from(presence)
    .innerJoin(
      syncapiCurrentState,
      and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.member'), eq(syncapiCurrentState.stateKey, presence.userId), eq(syncapiCurrentState.membership, 'join')),
    )
    .where(window ? and(gt(presence.streamId, window.after), lte(presence.streamId, window.upto)) : undefined)
    .orderBy(presence.streamId);
  // Older clients (matrix-js-sdk's peek among them) read the user from the content.
  return rows.map(({ p }) => ({ type: 'm.presence', sender: p.userId, content: { ...presenceContent(p, now), user_id: p.userId } }));
}

/**
 * What a preview's /events carries besides room events (as Synapse's does, and sytest's
 * history-visibility tests expect): the presence of the room's members, its (public)
 * receipts and who types in it, changed in (after, upto] of the client-data positions.
 */
async function previewEphemeral(ctx: ClientContext, roomId: string, viewer: string, after: number, upto: number, now: number): Promise<unknown[]> {
  if (after >= upto) return [];
  const events = await membersPresence(ctx, roomId, now, { after, upto });
  const receipts = (await ctx.sync.clientData.receiptsOf([roomId], viewer, after, upto)).filter((r) => r.receiptType === 'm.read');
  if (receipts.length > 0) events.push({ type: 'm.receipt', room_id: roomId, content: receiptContent(receipts) });
  const typing = (await ctx.sync.clientData.typingOf([roomId], after, upto, now)).get(roomId);
  if (typing) events.push({ type: 'm.typing', room_id: roomId, content: { user_ids: typing } });
  return events;
}

export function registerPreviewRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts, { guests: true });
  /**
   * Per device and room, the stream position of its last answer: a client's first /events
   * poll may come without `from` (matrix-js-sdk's does), and it means "after what I was
   * given", not "after whatever happens to be the position when the poll arrives" — a
   * message sent in between would be lost. A device this process does not remember reads
   * from the current position, as the specification has it.
   */
  const cursors = new LRUCache<string, { rooms: number; clientData: number }>({ max: MAX_CURSORS });
  const cursorKey = (s: Session, roomId: string) => `${s.userId}\u0000${s.deviceId}\u0000${roomId}`;

  clientRoute(app, {
    method: 'GET',
    path: '/rooms/:roomId/initialSync',
    // It starts a peek like POST /peek does, under the same per-device rate limit.
    config: { rateLimit: peekRateLimit(ctx, 'preview') },
    preHandler: auth,
    handler: async (req) => {
      const session = sessionOf(req);
      const { userId } = session;
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const limit = parseLimit((req.query as { limit?: string }).limit);
      let peeked = false;
      if (!(await ctx.rooms.roomExists(roomId)) && serverOf(roomId) !== ctx.config.serverName && ctx.remote) {
        // A room on another server this one does not hold: the preview peeks it over
        // federation first (as POST /peek does); its own errors say why it cannot.
        await startDevicePeek(ctx, req, session, roomId, [serverOf(roomId)]);
        await ctx.barrier.forReads();
        peeked = true;
      }
      if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
      const access = await accessOf(ctx, roomId, userId);
      if (access.kind === 'none') throw forbidden('you are not a member of this room, were never one, and it is not world_readable');
      // The preview is a device peek: started here, or renewed when it is live.
      if (access.kind === 'peek' && !peeked) await startDevicePeek(ctx, req, session, roomId, [serverOf(roomId)]);

      const upto = ctx.sync.positions();
      const bound = access.kind === 'parted' ? Math.min(access.leftAt, upto.rooms) : upto.rooms;
      const now = ctx.clock.now();
      const slice = await ctx.rooms.timeline(roomId, 0, bound, limit);
      const shown = await ctx.rooms.visibleTo(roomId, userId, slice.events, upto.rooms);
      const state = await ctx.rooms.stateBefore(roomId, bound + 1);
      const clientData = await ctx.sync.clientDataNow();
      cursors.set(cursorKey(session, roomId), { rooms: bound, clientData });
      const first: StoredEvent | undefined = slice.events[0];
      const membership = access.kind === 'member' ? 'join' : access.membership;
      return {
        room_id: roomId,
        // A reader with no membership (a peeker) has none to tell.
        ...(membership !== null && MEMBERSHIPS.has(membership) ? { membership } : {}),
        messages: {
          chunk: clientEvents(shown, now, session),
          // Where /messages goes on backwards (always given, as clients expect the key: with
          // nothing shown it is the same place as end).
          start: first ? formatTopologicalToken(positionOf(first)) : formatSyncToken({ rooms: bound, peeks: upto.peeks }),
          end: formatSyncToken({ rooms: bound, peeks: upto.peeks, clientData }),
        },
        state: clientEvents(state, now),
        visibility: await directoryVisibility(ctx.db, roomId),
        account_data: await roomAccountData(ctx, userId, roomId),
        presence: access.kind === 'parted' ? [] : await membersPresence(ctx, roomId, now),
      };
    },
  });

  // Where the room stream stood when each /events request arrived: a poll with no `from`
  // reads from there, so an event sent while the poll was being authenticated and checked
  // (a client sending and polling at once) is not skipped.
  const arrivedAt = new WeakMap<FastifyRequest, number>();
  clientRoute(app, {
    method: 'GET',
    path: '/events',
    onRequest: (req, _reply, done) => {
      arrivedAt.set(req, ctx.sync.positions().rooms);
      done();
    },
    preHandler: auth,
    handler: async (req, reply) => {
      const session = sessionOf(req);
      const { userId, deviceId } = session;
      const q = req.query as { room_id?: string; from?: string; timeout?: string };
      const abortOnClose = () => hangupOnClose(req.raw, reply.raw);
      if (q.room_id === undefined || q.room_id === '') {
        // Guests may call /events only as room previews use it (Guest access module).
        if (session.isGuest) throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'guests must give room_id: /events is for room previews');
        return allRoomsEvents(ctx, session, q.from, parseTimeout(q.timeout), abortOnClose());
      }
      const roomId = requireRoomId(q.room_id);
      let from: number | undefined;
      // A token without a client-data part (an older one) reads presence, receipts and typing from now.
      let clientDataFrom: number | undefined;
      if (q.from !== undefined && q.from !== '') {
        const token = parseSyncToken(q.from);
        if (!token) throw invalidParam('unknown from token: give the end of the initialSync or of the previous /events');
        from = token.rooms;
        if (q.from.split('_').length >= 3) clientDataFrom = token.clientData; // a /sync token may carry a lazy sequence too
      }
      const timeoutMs = parseTimeout(q.timeout);
      if (!(await ctx.rooms.roomExists(roomId))) throw forbidden('you are not in this room (or it does not exist)');
      const access = await accessOf(ctx, roomId, userId);
      // A poll with no `from` and no cursor reads from now: now as the poll arrived, not
      // after its checks or the peek's renewal below, which may let events sent meanwhile slip past.
      const key = cursorKey(session, roomId);
      const remembered = cursors.get(key);
      let after = from ?? remembered?.rooms ?? arrivedAt.get(req) ?? ctx.sync.positions().rooms;
      const clientDataAfter = clientDataFrom ?? (from === undefined ? remembered?.clientData : undefined) ?? (await ctx.sync.clientDataNow());
      // Members read their receipts and typing in /sync; previews (peekers) read them here.
      const withEphemeral = access.kind === 'peek' || access.kind === 'member';
      if (access.kind === 'peek') {
        // Each poll keeps the preview's peek alive (and starts it again if it ran out).
        await keepDevicePeek(ctx, req, session, roomId);
        ctx.remote?.deviceSynced(userId, deviceId);
      }
      const signal = abortOnClose();

      // A peeker's poll waits at most half a peek lifetime, so that a device that keeps
      // polling renews its peek well before it runs out.
      const wait = access.kind === 'peek' ? Math.min(timeoutMs, Math.floor(ctx.config.peekLifetimeMs / 2)) : timeoutMs;
      const deadline = ctx.clock.now() + wait;
      const start = q.from !== undefined && q.from !== '' ? q.from : formatSyncToken({ rooms: after, peeks: ctx.sync.positions().peeks });
      for (;;) {
        const upto = ctx.sync.positions();
        const clientDataUpto = Math.max(clientDataAfter, await ctx.sync.clientDataNow());
        let bound = upto.rooms;
        let horizon: number | undefined;
        if (access.kind === 'peek' || access.kind === 'none') {
          // What a peek may see ends at the event that took the room out of world_readable
          // or encrypted it (as in /sync), whether or not the peek's end is projected yet.
          // A reader who may no longer peek gets what led up to that event, then 403.
          horizon = (await ctx.rooms.peekHorizons([{ roomId, afterSeq: after }], upto.rooms)).get(roomId);
          if (horizon !== undefined) bound = Math.min(bound, horizon);
          else if (access.kind === 'none') throw forbidden('you are not a member of this room and it is not world_readable');
        }
        const read = await roomEventsAfter(ctx.db, roomId, after, bound, EVENTS_PAGE);
        const full = read.length === EVENTS_PAGE;
        const cursor = full ? read.at(-1)!.seq : Math.max(after, bound);
        const shown = await ctx.rooms.visibleTo(roomId, userId, read, upto.rooms);
        after = cursor;
        const ephemeral = withEphemeral ? await previewEphemeral(ctx, roomId, userId, clientDataAfter, clientDataUpto, ctx.clock.now()) : [];
        const answer = () => {
          cursors.set(key, { rooms: cursor, clientData: clientDataUpto });
          return { chunk: [...clientEvents(shown, ctx.clock.now(), session), ...ephemeral], start, end: formatSyncToken({ rooms: cursor, peeks: upto.peeks, clientData: clientDataUpto }) };
        };
        if (shown.length > 0 || ephemeral.length > 0) return answer();
        if (horizon !== undefined && !full) {
          // The peek's view ended there: the next poll finds out what the reader may still do.
          if (access.kind === 'none') throw forbidden('you are not a member of this room and it is not world_readable');
          return answer();
        }
        if (full) continue; // hidden events only, and more to read
        const remaining = deadline - ctx.clock.now();
        if (remaining <= 0 || signal.aborted) return answer();
        // Wait for something in this room, unless the projection or client data moved on meanwhile.
        if (ctx.sync.positions().rooms !== upto.rooms) continue;
        if (withEphemeral && (await ctx.sync.clientDataNow()) > clientDataUpto) continue;
        const woken = await ctx.sync.waitForNews({ userId, deviceId, roomIds: [roomId], clientDataRoomIds: withEphemeral ? [roomId] : [] }, remaining, signal);
        if (woken === false) return answer();
      }
    },
  });
}

/**
 * GET /events without room_id (deprecated, kept for old clients and test suites): the events
 * of the rooms the user has joined, after `from` (default: now), long-polled like /sync. No
 * presence, typing or receipts here: /sync carries those.
 */
async function allRoomsEvents(ctx: ClientContext, session: Session, fromRaw: string | undefined, timeoutMs: number, signal: Hangup) {
  const { userId, deviceId } = session;
  let after: number;
  if (fromRaw !== undefined && fromRaw !== '') {
    const token = parseSyncToken(fromRaw);
    if (!token) throw invalidParam('unknown from token: give the end of the previous /events or a /sync next_batch');
    after = token.rooms;
  } else {
    after = ctx.sync.positions().rooms;
  }
  const start = formatSyncToken({ rooms: after, peeks: ctx.sync.positions().peeks });
  const deadline = ctx.clock.now() + timeoutMs;
  for (;;) {
    const upto = ctx.sync.positions();
    const joined = (await ctx.rooms.membershipsOf(userId)).filter((m) => m.membership === 'join').map((m) => m.roomId);
    const read = (await Promise.all(joined.map((roomId) => roomEventsAfter(ctx.db, roomId, after, upto.rooms, EVENTS_PAGE))))
      .flat()
      .sort((a, b) => Number(a.seq) - Number(b.seq))
      .slice(0, EVENTS_PAGE);
    const full = read.length === EVENTS_PAGE;
    const cursor = full ? Number(read.at(-1)!.seq) : Math.max(after, upto.rooms);
    const shown: StoredEvent[] = [];
    for (const roomId of new Set(read.map((e) => e.pdu.room_id as string))) {
      shown.push(
        ...(await ctx.rooms.visibleTo(
          roomId,
          userId,
          read.filter((e) => e.pdu.room_id === roomId),
          upto.rooms,
        )),
      );
    }
    shown.sort((a, b) => Number(a.seq) - Number(b.seq));
    after = cursor;
    const answer = () => ({ chunk: clientEvents(shown, ctx.clock.now(), session), start, end: formatSyncToken({ rooms: cursor, peeks: upto.peeks }) });
    if (shown.length > 0) return answer();
    if (full) continue;
    const remaining = deadline - ctx.clock.now();
    if (remaining <= 0 || signal.aborted) return answer();
    if (ctx.sync.positions().rooms !== upto.rooms) continue;
    if ((await ctx.sync.waitForNews({ userId, deviceId, roomIds: joined }, remaining, signal)) === false) return answer();
  }
}
