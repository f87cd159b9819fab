// The public room directory: GET and POST /publicRooms (the rooms published with
// visibility `public`, described from current state), and GET/PUT
// /directory/list/room/{roomId} (a room's visibility in the directory).
//
// The directory itself is the `room_directory` table (written here, not from the log);
// what a listed room looks like (name, topic, members, …) is read from the sync
// projection's current state at each request, so it is always as current as /sync.
import { eq, sql, type SQL } from 'drizzle-orm';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { authorize } from '../../actors/authRules.ts';
import { stateKey, type RoomFacts, type StateEntry } from '../../actors/state.ts';
import { isValidRoomId, isValidServerName } from '../../events/ids.ts';
import { rowsOf, type Db } from '../../store/db.ts';
import { roomDirectory } from '../../store/schema.ts';
import { badJson, forbidden, invalidParam, notFound } from '../errors.ts';
import { requireAuth, sessionOf } from './auth.ts';
import type { ClientContext } from './context.ts';
import { clientRoute } from './prefixes.ts';

export type DirectoryVisibility = 'public' | 'private';

/** The most rooms one page lists (a larger `limit` is served as this); also the page size when none is asked for. */
export const MAX_PUBLIC_ROOMS_LIMIT = 500;
/** A `since` token longer than this is not one of ours. */
const MAX_TOKEN_LENGTH = 1024;

/**
 * Lists the room in the directory (`public`) or takes it out (`private`). Also what
 * createRoom calls for `visibility: "public"`.
 */
export async function publishRoom(db: Db, roomId: string, visibility: DirectoryVisibility, now: number): Promise<void> {
  await db
    .insert(roomDirectory)
    .values({ roomId, visibility, updatedAt: now })
    .onConflictDoUpdate({ target: roomDirectory.roomId, set: { visibility, updatedAt: now } });
}

/** The room's visibility in the directory: `private` unless it was published. */
export async function directoryVisibility(db: Db, roomId: string): Promise<DirectoryVisibility> {
  const [row] = await db.select({ visibility: roomDirectory.visibility }).from(roomDirectory).where(eq(roomDirectory.roomId, roomId));
  return row?.visibility === 'public' ? 'public' : 'private';
}

// ---------------------------------------------------------------------------------------
// Pagination tokens. Rooms are ordered by joined members (most first), then room ID
// (bytewise); a token names the room a page ended (`n`: continue after it) or began at
// (`p`: go back before it), as base64url JSON. Keyset pagination: a page never repeats
// nor skips a room that kept its place, whatever joined or left the directory meanwhile.

interface PageKey {
  members: number;
  roomId: string;
}

interface SinceToken extends PageKey {
  dir: 'n' | 'p';
}

function encodeToken(dir: 'n' | 'p', key: PageKey): string {
  return Buffer.from(JSON.stringify([dir, key.members, key.roomId]), 'utf8').toString('base64url');
}

function decodeToken(raw: string): SinceToken {
  const bad = () => invalidParam('since is not a pagination token this server gave out');
  if (raw.length === 0 || raw.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(raw)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw bad();
  const [dir, members, roomId] = parsed as unknown[];
  if ((dir !== 'n' && dir !== 'p') || typeof members !== 'number' || !Number.isSafeInteger(members) || members < 0) throw bad();
  if (typeof roomId !== 'string' || !isValidRoomId(roomId)) throw bad();
  return { dir, members, roomId };
}

// ---------------------------------------------------------------------------------------
// The listing.

interface PublicRoomsQuery {
  limit: number;
  since?: SinceToken;
  searchTerm?: string;
  /** Room types to list (`null`: rooms without a type); undefined: all. */
  roomTypes?: (string | null)[];
}

/** One room of a page as the listing query gives it (a JSON object: numbers and booleans typed). */
interface ListedRow {
  roomId: string;
  members: number;
  name: string | null;
  topic: string | null;
  canonicalAlias: string | null;
  avatarUrl: string | null;
  joinRule: string | null;
  roomType: string | null;
  worldReadable: boolean;
  guestCanJoin: boolean;
}

export interface PublicRoomsChunkEntry {
  room_id: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  name?: string;
  topic?: string;
  canonical_alias?: string;
  avatar_url?: string;
  join_rule?: string;
  room_type?: string;
}

export interface PublicRoomsResponse {
  chunk: PublicRoomsChunkEntry[];
  next_batch?: string;
  prev_batch?: string;
  total_room_count_estimate: number;
}

/** An SQL string literal of a constant of this file (never of input). */
const literal = (s: string): SQL => sql.raw(`'${s.replaceAll("'", "''")}'`);

/**
 * A string field of a state event's content (null when the event or field is missing or
 * not a string) of the room whose ID is the SQL expression `roomId`: one primary-key lookup.
 */
const stringField = (roomId: SQL, type: string, field: string): SQL => sql`(
  select case when jsonb_typeof(s.content -> ${literal(field)}) = 'string' then s.content ->> ${literal(field)} end
  from syncapi_current_state s where s.room_id = ${roomId} and s.type = ${literal(type)} and s.state_key = '')`;

/** What the search filter reads, for every published room (only when a filter asks). */
const SEARCH_COLUMNS = sql`,
    ${stringField(sql`d.room_id`, 'm.room.name', 'name')} as "name",
    ${stringField(sql`d.room_id`, 'm.room.topic', 'topic')} as "topic",
    ${stringField(sql`d.room_id`, 'm.room.canonical_alias', 'alias')} as "canonicalAlias"`;
const ROOM_TYPE_COLUMN = sql`,
    ${stringField(sql`d.room_id`, 'm.room.create', 'type')} as "roomType"`;

/**
 * What the directory shows of a room of the page `p` (a JSON object per room). Only the
 * rooms of one page are described: the other published rooms cost one member count each
 * (plus what a filter reads).
 */
const P = sql`p."roomId"`;
const DESCRIPTION = sql`json_build_object(
    'roomId', p."roomId",
    'members', p."members",
    'name', ${stringField(P, 'm.room.name', 'name')},
    'topic', ${stringField(P, 'm.room.topic', 'topic')},
    'canonicalAlias', ${stringField(P, 'm.room.canonical_alias', 'alias')},
    'avatarUrl', ${stringField(P, 'm.room.avatar', 'url')},
    'joinRule', ${stringField(P, 'm.room.join_rules', 'join_rule')},
    'roomType', ${stringField(P, 'm.room.create', 'type')},
    'worldReadable', coalesce(${stringField(P, 'm.room.history_visibility', 'history_visibility')} = 'world_readable', false),
    'guestCanJoin', coalesce(${stringField(P, 'm.room.guest_access', 'guest_access')} = 'can_join', false))`;

function filterOf(q: PublicRoomsQuery): SQL {
  const parts: SQL[] = [sql`true`];
  if (q.searchTerm) {
    // Both sides lowered by the database, so the term and the text fold alike.
    const term = sql`lower(${q.searchTerm})`;
    parts.push(sql`(strpos(lower(coalesce("name", '')), ${term}) > 0
      or strpos(lower(coalesce("topic", '')), ${term}) > 0
      or strpos(lower(coalesce("canonicalAlias", '')), ${term}) > 0)`);
  }
  if (q.roomTypes) {
    const types = q.roomTypes.filter((t): t is string => t !== null);
    const alternatives: SQL[] = [];
    const typeList = sql.join(
      types.map((t) => sql`${t}`),
      sql`, `,
    );
    if (types.length > 0) alternatives.push(sql`"roomType" in (${typeList})`);
    if (q.roomTypes.includes(null)) alternatives.push(sql`"roomType" is null`);
    parts.push(alternatives.length > 0 ? sql`(${sql.join(alternatives, sql` or `)})` : sql`false`);
  }
  return sql.join(parts, sql` and `);
}

const ROOM_ID = sql`"roomId" collate "C"`;
/** Rooms after `k` in directory order (fewer members, or as many and a greater room ID). */
const after = (k: PageKey) => sql`("members" < ${k.members} or ("members" = ${k.members} and ${ROOM_ID} > ${k.roomId}))`;
/** Rooms before `k` in directory order. */
const before = (k: PageKey) => sql`("members" > ${k.members} or ("members" = ${k.members} and ${ROOM_ID} < ${k.roomId}))`;
const FORWARDS = sql`order by "members" desc, ${ROOM_ID} asc`;
const BACKWARDS = sql`order by "members" asc, ${ROOM_ID} desc`;

interface Listing {
  /** Rooms the filter matches. */
  total: number;
  /** Up to limit + 1 rooms from `since` in the direction asked. */
  rows: ListedRow[];
  /** Whether a matching room lies on the other side of `since`. */
  behind: boolean;
}

/**
 * One statement: every published room the server has state for, with its joined members
 * (the order) and what the filter reads, computed once (a materialized CTE); the count,
 * the page and whether rooms lie behind `since` are read from it. JIT compilation is off
 * for it: the plan is thousands of index lookups, which JIT never speeds up, and with a
 * few thousand rooms the estimated cost passes jit_above_cost and compiling alone took
 * longer than the query.
 */
async function listing(db: Db, q: PublicRoomsQuery): Promise<Listing> {
  const backwards = q.since?.dir === 'p';
  const keyset = !q.since ? sql`true` : backwards ? before(q.since) : after(q.since);
  const behind = !q.since ? sql`false` : sql`exists (select 1 from matching where not ${keyset})`;
  const statement = sql`with listed as materialized (
    select d.room_id as "roomId",
      (select count(*) from syncapi_current_state m
        where m.room_id = d.room_id and m.type = 'm.room.member' and m.membership = 'join')::int as "members"
      ${q.searchTerm ? SEARCH_COLUMNS : sql``}
      ${q.roomTypes ? ROOM_TYPE_COLUMN : sql``}
    from room_directory d
    where d.visibility = 'public'
      and exists (select 1 from syncapi_current_state c where c.room_id = d.room_id and c.type = 'm.room.create' and c.state_key = '')
  ),
  matching as (select "roomId", "members" from listed where ${filterOf(q)}),
  page as (select "roomId", "members" from matching where ${keyset} ${backwards ? BACKWARDS : FORWARDS} limit ${q.limit + 1})
  select
    (select count(*) from matching)::int as "total",
    ${behind} as "behind",
    (select coalesce(json_agg(${DESCRIPTION} ${backwards ? BACKWARDS : FORWARDS}), '[]'::json) from page p) as "rows"`;
  const result = await db.transaction(async (tx) => {
    await tx.execute(sql`set local jit = off`);
    return tx.execute(statement);
  });
  const [row] = rowsOf<{ total: number | string; behind: boolean; rows: ListedRow[] | string }>(result);
  if (!row) throw new Error('the public rooms query answered no row');
  return { total: Number(row.total), behind: row.behind === true, rows: typeof row.rows === 'string' ? (JSON.parse(row.rows) as ListedRow[]) : row.rows };
}

function keyOf(row: ListedRow): PageKey {
  return { members: Number(row.members), roomId: row.roomId };
}

function entryOf(row: ListedRow): PublicRoomsChunkEntry {
  const entry: PublicRoomsChunkEntry = {
    room_id: row.roomId,
    num_joined_members: Number(row.members),
    world_readable: row.worldReadable === true,
    guest_can_join: row.guestCanJoin === true,
  };
  if (row.name !== null) entry.name = row.name;
  if (row.topic !== null) entry.topic = row.topic;
  if (row.canonicalAlias !== null) entry.canonical_alias = row.canonicalAlias;
  if (row.avatarUrl !== null) entry.avatar_url = row.avatarUrl;
  if (row.joinRule !== null) entry.join_rule = row.joinRule;
  if (row.roomType !== null) entry.room_type = row.roomType;
  return entry;
}

/**
 * One page of the directory. `total_room_count_estimate` counts the rooms the filter
 * matches. A page has `prev_batch` when matching rooms come before it, `next_batch` when
 * some come after it.
 */
export async function listPublicRooms(db: Db, q: PublicRoomsQuery): Promise<PublicRoomsResponse> {
  const { total, rows, behind } = await listing(db, q);
  const out: PublicRoomsResponse = { chunk: [], total_room_count_estimate: total };
  const more = rows.length > q.limit;
  if (q.since?.dir === 'p') {
    // Rows come nearest `since` first: the page is them reversed. Rooms "behind" a
    // backwards `since` are after it.
    const page = rows.slice(0, q.limit).reverse();
    out.chunk = page.map(entryOf);
    if (more) out.prev_batch = encodeToken('p', keyOf(page[0]!));
    if (behind && page.length > 0) out.next_batch = encodeToken('n', keyOf(page.at(-1)!));
    return out;
  }
  const page = rows.slice(0, q.limit);
  out.chunk = page.map(entryOf);
  if (more) out.next_batch = encodeToken('n', keyOf(page.at(-1)!));
  if (behind && page.length > 0) out.prev_batch = encodeToken('p', keyOf(page[0]!));
  return out;
}

// ---------------------------------------------------------------------------------------
// Input.

function limitOf(n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw invalidParam('limit must be a positive integer');
  return Math.min(n, MAX_PUBLIC_ROOMS_LIMIT);
}

function parseQueryLimit(raw: unknown): number {
  if (raw === undefined) return MAX_PUBLIC_ROOMS_LIMIT;
  if (typeof raw !== 'string' || !/^\d{1,16}$/.test(raw)) throw invalidParam('limit must be a positive integer');
  return limitOf(Number(raw));
}

function parseSince(raw: unknown): SinceToken | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (typeof raw !== 'string') throw invalidParam('since must be a string');
  return decodeToken(raw);
}

/**
 * The `server` query parameter. peekd lists its own directory only: it does not query
 * other servers' directories over federation (`/_matrix/federation/v1/publicRooms`). The
 * specification gives no error for this, so a request naming another server is answered
 * 404 M_NOT_FOUND with that reason — never an empty list, which would say that server
 * publishes nothing. (Synapse proxies the request, and answers 502 when it cannot.)
 */
function checkServer(ctx: ClientContext, raw: unknown): void {
  if (raw === undefined || raw === ctx.config.serverName) return;
  if (typeof raw !== 'string' || !isValidServerName(raw)) throw invalidParam('server must be a server name');
  throw notFound(`this server does not fetch the public room directory of ${raw}; ask that server`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const given = (v: unknown) => v !== undefined && v !== null;

/** The body of POST /publicRooms: wrong types are M_BAD_JSON, wrong values M_INVALID_PARAM. */
function parsePostBody(body: unknown): PublicRoomsQuery & { thirdPartyInstanceId?: string } {
  const b = body === undefined ? {} : body;
  if (!isObject(b)) throw badJson('the request body must be a JSON object');
  let limit = MAX_PUBLIC_ROOMS_LIMIT;
  if (given(b.limit)) {
    if (typeof b.limit !== 'number') throw badJson('limit must be an integer');
    limit = limitOf(b.limit);
  }
  if (given(b.since) && typeof b.since !== 'string') throw badJson('since must be a string');
  const since = parseSince(b.since ?? undefined);
  let searchTerm: string | undefined;
  let roomTypes: (string | null)[] | undefined;
  if (given(b.filter)) {
    if (!isObject(b.filter)) throw badJson('filter must be an object');
    const term = b.filter.generic_search_term;
    if (given(term)) {
      if (typeof term !== 'string') throw badJson('filter.generic_search_term must be a string');
      searchTerm = term;
    }
    const types = b.filter.room_types;
    if (given(types)) {
      if (!Array.isArray(types) || !types.every((t) => t === null || typeof t === 'string')) throw badJson('filter.room_types must be a list of strings and nulls');
      roomTypes = types as (string | null)[];
    }
  }
  if (given(b.include_all_networks) && typeof b.include_all_networks !== 'boolean') throw badJson('include_all_networks must be a boolean');
  if (given(b.third_party_instance_id) && typeof b.third_party_instance_id !== 'string') throw badJson('third_party_instance_id must be a string');
  const thirdPartyInstanceId = (b.third_party_instance_id ?? undefined) as string | undefined;
  if (thirdPartyInstanceId !== undefined && b.include_all_networks === true) {
    throw invalidParam('third_party_instance_id can only be used when include_all_networks is false');
  }
  return { limit, since, searchTerm, roomTypes, thirdPartyInstanceId };
}

function roomIdParam(req: FastifyRequest): string {
  const roomId = (req.params as { roomId: string }).roomId;
  if (!isValidRoomId(roomId)) throw invalidParam(`malformed room ID ${roomId}`);
  return roomId;
}

/** The room's current state as the authorization rules read it (only `state` matters to them). */
async function roomFacts(ctx: ClientContext, roomId: string): Promise<RoomFacts | null> {
  const events = await ctx.rooms.currentState(roomId);
  const create = events.find((e) => e.pdu.type === 'm.room.create' && e.pdu.state_key === '');
  if (!create) return null;
  const state = new Map<string, StateEntry>();
  for (const e of events) if (typeof e.pdu.state_key === 'string') state.set(stateKey(e.pdu.type, e.pdu.state_key), { eventId: e.eventId, pdu: e.pdu, seq: e.seq });
  const newest = events.at(-1)!;
  return {
    roomVersion: typeof create.pdu.content?.room_version === 'string' ? create.pdu.content.room_version : '1',
    createEventId: create.eventId,
    state,
    latest: { eventId: newest.eventId, depth: Number(newest.pdu.depth ?? 0), seq: newest.seq },
    txns: new Map(),
    recentEventIds: [],
    eventCount: events.length,
  };
}

export function registerPublicRoomsRoutes(app: FastifyInstance, ctx: ClientContext): void {
  const auth = requireAuth(ctx.accounts);

  // No access token needed (the specification: "Requires authentication: No").
  clientRoute(app, {
    method: 'GET',
    path: '/publicRooms',
    handler: async (req) => {
      const q = req.query as Record<string, unknown>;
      checkServer(ctx, q.server);
      return listPublicRooms(ctx.db, { limit: parseQueryLimit(q.limit), since: parseSince(q.since) });
    },
  });

  clientRoute(app, {
    method: 'POST',
    path: '/publicRooms',
    preHandler: auth,
    handler: async (req) => {
      checkServer(ctx, (req.query as Record<string, unknown>).server);
      const q = parsePostBody(req.body);
      // No application services bridge third-party networks here: every room listed is a
      // Matrix room, and a named third-party network has none.
      if (q.thirdPartyInstanceId !== undefined) return { chunk: [], total_room_count_estimate: 0 } satisfies PublicRoomsResponse;
      return listPublicRooms(ctx.db, q);
    },
  });

  clientRoute(app, {
    method: 'GET',
    path: '/directory/list/room/:roomId',
    handler: async (req) => {
      const roomId = roomIdParam(req);
      if (!(await ctx.rooms.roomExists(roomId))) throw notFound('unknown room');
      return { visibility: await directoryVisibility(ctx.db, roomId) };
    },
  });

  // Who may list or unlist a room: a joined member who may send m.room.canonical_alias
  // (Synapse's rule), judged by the authorization rules on current state.
  clientRoute(app, {
    method: 'PUT',
    path: '/directory/list/room/:roomId',
    preHandler: auth,
    handler: async (req) => {
      const { userId } = sessionOf(req);
      const roomId = roomIdParam(req);
      const body = req.body === undefined ? {} : req.body;
      if (!isObject(body)) throw badJson('the request body must be a JSON object');
      // The specification: visibility defaults to `public`.
      const visibility = body.visibility ?? 'public';
      if (typeof visibility !== 'string') throw badJson('visibility must be a string');
      if (visibility !== 'public' && visibility !== 'private') throw invalidParam('visibility must be "public" or "private"');
      const room = await roomFacts(ctx, roomId);
      if (!room) throw notFound('unknown room');
      const refusal = authorize(room, { type: 'm.room.canonical_alias', sender: userId, state_key: '', content: {} });
      if (refusal) throw forbidden(`you may not change this room's visibility in the directory: ${refusal.message}`);
      await publishRoom(ctx.db, roomId, visibility, ctx.clock.now());
      return {};
    },
  });
}
