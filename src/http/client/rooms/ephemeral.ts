// Receipts, read markers and typing notifications: what a member of a room says about
// itself that is not a room event. They are client data (src/syncapi/clientData.ts), shown
// to the room's members in /sync's `ephemeral` (m.receipt, m.typing; m.fully_read is room
// account data) and to room previews in GET /events. Guests may use them (Guest access).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RECEIPT_TYPES } from '../../../syncapi/clientData.ts';
import type { StoredEvent } from '../../../syncapi/roomReader.ts';
import { MatrixError, forbidden, invalidParam, notFound } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientRoute } from '../prefixes.ts';
import { requireRoomId } from '../resolveRoom.ts';

/** Typing lasts this long when the client gives no `timeout`, and at most this long when it does. */
export const DEFAULT_TYPING_MS = 30_000;
export const MAX_TYPING_MS = 120_000;

const FULLY_READ = 'm.fully_read';

/**
 * Whether a receipt's `thread_id` fits its event (client-server API, threaded receipts):
 * `main` for an event in no thread, a thread root's ID for the root itself or an event of
 * that thread (`m.relates_to` with `rel_type: m.thread`). Anything else is 400.
 */
function inThread(event: StoredEvent, threadId: string): boolean {
  const relation = (event.pdu.content as { 'm.relates_to'?: { rel_type?: unknown; event_id?: unknown } } | undefined)?.['m.relates_to'];
  const threadRoot = relation?.rel_type === 'm.thread' && typeof relation.event_id === 'string' ? relation.event_id : undefined;
  if (threadId === 'main') return threadRoot === undefined;
  return threadId.startsWith('$') && (event.eventId === threadId || threadRoot === threadId);
}

export function registerEphemeralRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const guestsToo = requireAuth(ctx.accounts, { guests: true });

  const requireJoined = async (roomId: string, userId: string) => {
    if ((await ctx.rooms.membership(roomId, userId)) !== 'join') throw forbidden('you are not in this room');
  };

  /** The event a receipt or marker points at must be one of this room's. */
  const requireEventIn = async (roomId: string, eventId: unknown, what: string): Promise<StoredEvent> => {
    if (typeof eventId !== 'string' || !eventId.startsWith('$')) throw invalidParam(`${what} must be an event ID`);
    const event = await ctx.rooms.eventById(eventId);
    if (!event || event.pdu.room_id !== roomId) throw notFound(`${eventId} is not an event of this room`);
    return event;
  };

  const mark = async (req: FastifyRequest, roomId: string, type: string, event: StoredEvent, threadId: string) => {
    const { userId } = sessionOf(req);
    if (type === FULLY_READ) await ctx.sync.putAccountData(userId, roomId, FULLY_READ, { event_id: event.eventId });
    else await ctx.sync.putReceipt({ roomId, receiptType: type, userId, threadId, eventId: event.eventId, eventSeq: event.seq });
  };

  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/receipt/:receiptType/:eventId',
    schema: { body: { type: 'object' } },
    preHandler: guestsToo,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const params = req.params as { roomId: string; receiptType: string; eventId: string };
      const roomId = requireRoomId(params.roomId);
      const type = params.receiptType;
      if (type !== FULLY_READ && !RECEIPT_TYPES.includes(type)) throw invalidParam(`the receipt type must be one of ${[...RECEIPT_TYPES, FULLY_READ].join(', ')}`);
      const threadId = (req.body as { thread_id?: unknown } | undefined)?.thread_id;
      if (threadId !== undefined && (typeof threadId !== 'string' || threadId === '')) throw invalidParam('thread_id must be "main" or an event ID');
      if (threadId !== undefined && type === FULLY_READ) throw invalidParam('m.fully_read takes no thread_id');
      await requireJoined(roomId, userId);
      const event = await requireEventIn(roomId, params.eventId, 'the event');
      if (threadId !== undefined && !inThread(event, threadId)) throw invalidParam(`${event.eventId} is not in thread ${threadId}`);
      await mark(req, roomId, type, event, threadId ?? '');
      return {};
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/rooms/:roomId/read_markers',
    schema: { body: { type: 'object' } },
    preHandler: guestsToo,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = requireRoomId((req.params as { roomId: string }).roomId);
      const body = req.body as Record<string, unknown>;
      const marks = [FULLY_READ, ...RECEIPT_TYPES].filter((type) => body[type] !== undefined);
      await requireJoined(roomId, userId);
      // Every marker is checked before any is written: a bad one changes nothing.
      const checked: [string, StoredEvent][] = [];
      for (const type of marks) checked.push([type, await requireEventIn(roomId, body[type], type)]);
      for (const [type, event] of checked) await mark(req, roomId, type, event, '');
      return {};
    },
  });

  clientRoute(app, {
    method: 'PUT',
    path: '/rooms/:roomId/typing/:userId',
    schema: { body: { type: 'object' } },
    preHandler: guestsToo,
    handler: async (req) => {
      const session = sessionOf(req);
      const params = req.params as { roomId: string; userId: string };
      const roomId = requireRoomId(params.roomId);
      if (params.userId !== session.userId) throw forbidden('you may only say whether you yourself are typing');
      const { typing, timeout } = req.body as { typing?: unknown; timeout?: unknown };
      if (typing === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'typing is required');
      if (typeof typing !== 'boolean') throw invalidParam('typing must be true or false');
      if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isSafeInteger(timeout) || timeout < 0)) throw invalidParam('timeout must be a non-negative integer (ms)');
      await requireJoined(roomId, session.userId);
      await ctx.sync.setTyping(roomId, session.userId, typing ? Math.min(timeout ?? DEFAULT_TYPING_MS, MAX_TYPING_MS) : 0);
      return {};
    },
  });
}
