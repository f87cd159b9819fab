// POST /createRoom: a room hosted here, its first events decided by its new actor.
import { readProfile, type Profile } from '../../../clientapi/profiles.ts';
import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import type { PduDraft } from '../../../actors/commands.ts';
import { isValidRoomAlias, isValidUserId } from '../../../events/ids.ts';
import { roomAliases } from '../../../store/schema.ts';
import { MatrixError, invalidParam } from '../../errors.ts';
import { requireAuth, sessionOf } from '../auth.ts';
import type { ClientContext } from '../context.ts';
import { clientWrite } from '../clientWrite.ts';
import { clientRoute } from '../prefixes.ts';
import { publishRoom } from '../publicRooms.ts';

/** The most invites, and the most initial_state entries, one createRoom takes. */
const MAX_CREATE_ROOM_LIST = 200;
/** A power level: an integer canonical JSON can carry. */
const powerLevel = { type: 'integer', minimum: -(2 ** 53 - 1), maximum: 2 ** 53 - 1 } as const;

const createRoomBody = {
  type: 'object',
  properties: {
    visibility: { type: 'string', enum: ['public', 'private'] },
    room_alias_name: { type: 'string', minLength: 1, maxLength: 200 },
    name: { type: 'string' },
    topic: { type: 'string' },
    // Every invite and initial state entry is an event of the one createRoom decision.
    invite: { type: 'array', maxItems: MAX_CREATE_ROOM_LIST, items: { type: 'string' } },
    preset: { type: 'string', enum: ['private_chat', 'public_chat', 'trusted_private_chat'] },
    room_version: { type: 'string' },
    creation_content: { type: 'object', properties: { 'm.federate': { type: 'boolean' } } },
    power_level_content_override: {
      type: 'object',
      properties: {
        ban: powerLevel,
        kick: powerLevel,
        redact: powerLevel,
        invite: powerLevel,
        events_default: powerLevel,
        state_default: powerLevel,
        users_default: powerLevel,
        events: { type: 'object', additionalProperties: powerLevel },
        users: { type: 'object', additionalProperties: powerLevel },
        notifications: { type: 'object', additionalProperties: powerLevel },
      },
    },
    is_direct: { type: 'boolean' },
    initial_state: {
      type: 'array',
      maxItems: MAX_CREATE_ROOM_LIST,
      items: {
        type: 'object',
        required: ['type', 'content'],
        properties: { type: { type: 'string' }, state_key: { type: 'string' }, content: { type: 'object' } },
      },
    },
  },
} as const;

interface CreateRoomBody {
  visibility?: 'public' | 'private';
  room_alias_name?: string;
  name?: string;
  topic?: string;
  invite?: string[];
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  room_version?: string;
  creation_content?: Record<string, unknown>;
  power_level_content_override?: Record<string, unknown>;
  initial_state?: { type: string; state_key?: string; content: Record<string, unknown> }[];
}

export const ROOM_VERSION = '10';

/** The drafts createRoom expands to, in the order the specification gives. */
export function createRoomDrafts(creator: string, body: CreateRoomBody, alias?: string, profile: Profile = {}): PduDraft[] {
  const preset = body.preset ?? (body.visibility === 'public' ? 'public_chat' : 'private_chat');
  const invitees = body.invite ?? [];
  const state = (type: string, content: Record<string, unknown>, stateKey = ''): PduDraft => ({ type, sender: creator, state_key: stateKey, content });
  const users: Record<string, number> = { [creator]: 100 };
  if (preset === 'trusted_private_chat') for (const u of invitees) users[u] = 100;
  const drafts: PduDraft[] = [
    state('m.room.create', { ...(body.creation_content ?? {}), creator, room_version: ROOM_VERSION }),
    state('m.room.member', { ...profile, membership: 'join' }, creator),
    state('m.room.power_levels', {
      users,
      users_default: 0,
      events: {
        'm.room.name': 50,
        'm.room.power_levels': 100,
        'm.room.history_visibility': 100,
        'm.room.canonical_alias': 50,
        'm.room.avatar': 50,
        'm.room.tombstone': 100,
        'm.room.server_acl': 100,
        'm.room.encryption': 100,
      },
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: preset === 'public_chat' ? 50 : 0,
      notifications: { room: 50 },
      ...(body.power_level_content_override ?? {}),
    }),
  ];
  if (alias) drafts.push(state('m.room.canonical_alias', { alias }));
  drafts.push(state('m.room.join_rules', { join_rule: preset === 'public_chat' ? 'public' : 'invite' }));
  drafts.push(state('m.room.history_visibility', { history_visibility: 'shared' }));
  drafts.push(state('m.room.guest_access', { guest_access: preset === 'public_chat' ? 'forbidden' : 'can_join' }));
  for (const s of body.initial_state ?? []) drafts.push(state(s.type, s.content, s.state_key ?? ''));
  if (body.name !== undefined) drafts.push(state('m.room.name', { name: body.name }));
  if (body.topic !== undefined) drafts.push(state('m.room.topic', { topic: body.topic }));
  for (const u of invitees) drafts.push(state('m.room.member', { membership: 'invite' }, u));
  return drafts;
}

export function registerCreateRoomRoute(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  clientRoute(app, {
    method: 'POST',
    path: '/createRoom',
    config: { barrier: false },
    schema: { body: createRoomBody },
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const body = req.body as CreateRoomBody;
      if (body.room_version !== undefined && body.room_version !== ROOM_VERSION) {
        throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `this server creates rooms of version ${ROOM_VERSION} only`);
      }
      for (const u of body.invite ?? []) if (!isValidUserId(u)) throw invalidParam(`malformed user ID ${u}`);
      const roomId = `!${randomBytes(12).toString('base64url')}:${ctx.config.serverName}`;
      let alias: string | undefined;
      if (body.room_alias_name !== undefined) {
        alias = `#${body.room_alias_name}:${ctx.config.serverName}`;
        if (!isValidRoomAlias(alias)) throw invalidParam('invalid room_alias_name');
        const inserted = await ctx.db.insert(roomAliases).values({ alias, roomId, creator: userId }).onConflictDoNothing().returning();
        if (inserted.length === 0) throw new MatrixError(400, 'M_ROOM_IN_USE', 'that room alias is taken');
      }
      try {
        await clientWrite(ctx, req, sessionOf(req), {
          type: 'CreateRoom',
          roomId,
          roomVersion: ROOM_VERSION,
          events: createRoomDrafts(userId, body, alias, (await readProfile(ctx.db, userId)) ?? {}),
        });
      } catch (err) {
        if (alias) await ctx.db.delete(roomAliases).where(eq(roomAliases.alias, alias));
        throw err;
      }
      // `visibility: "public"` lists the new room in the public room directory.
      if (body.visibility === 'public') await publishRoom(ctx.db, roomId, 'public', ctx.clock.now());
      return alias ? { room_id: roomId, room_alias: alias } : { room_id: roomId };
    },
  });
}
