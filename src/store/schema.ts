// The Postgres tables (drizzle schema). The read models are derived from the streams and
// can be rebuilt by replaying them; accounts, profiles and client data (presence, account
// data, receipts, typing) are written directly and are not. Times are ms since the epoch.
import { bigint, boolean, customType, index, integer, jsonb, pgSequence, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';

const ms = (name: string) => bigint(name, { mode: 'number' });
const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({ dataType: () => 'bytea' });

/** Where each projection has read up to, per stream; written in the same transaction as its rows. */
export const projectionCheckpoints = pgTable(
  'projection_checkpoints',
  {
    projection: text('projection').notNull(),
    stream: text('stream').notNull(),
    seq: ms('seq').notNull(),
  },
  (t) => [primaryKey({ columns: [t.projection, t.stream] })],
);

/**
 * Log messages a projection could not decode (not JSON, an unknown envelope version, an
 * event of a shape this version does not know). Written in the transaction that moves the
 * projection's checkpoint past the message: passed over, never silently skipped.
 */
export const projectionQuarantine = pgTable(
  'projection_quarantine',
  {
    projection: text('projection').notNull(),
    /** The JetStream stream's name (with the deployment's prefix): `nats stream get <stream> <seq>` finds the message. */
    stream: text('stream').notNull(),
    streamSeq: ms('stream_seq').notNull(),
    subject: text('subject').notNull(),
    /** The message's first bytes (runner.ts QUARANTINE_PAYLOAD_MAX_BYTES at most). */
    payload: bytea('payload').notNull(),
    /** The message's whole size. */
    payloadBytes: integer('payload_bytes').notNull(),
    error: text('error').notNull(),
    quarantinedAt: ms('quarantined_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.projection, t.stream, t.streamSeq] })],
);

/** Device peeks (MSC2753), live and ended: /sync reads starts, renewals and ends by sequence. */
export const syncapiPeeks = pgTable(
  'syncapi_peeks',
  {
    roomId: text('room_id').notNull(),
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    shard: integer('shard').notNull(),
    /** PEEKS sequence of the PeekStarted event. */
    startedSeq: ms('started_seq').notNull(),
    startedAt: ms('started_at').notNull(),
    renewedAt: ms('renewed_at').notNull(),
    expiresAt: ms('expires_at'),
    /** ROOMS sequence of the room's latest event when the peek started. */
    roomSeq: ms('room_seq').notNull(),
    /** PEEKS sequence of the last event about this peek. */
    updatedSeq: ms('updated_seq').notNull(),
    endedSeq: ms('ended_seq'),
    endedAt: ms('ended_at'),
    endReason: text('end_reason'),
    /** ROOMS sequence the room had reached when the peek ended. */
    endedRoomSeq: ms('ended_room_seq'),
    /**
     * The peek this row's current one replaced, if it had ended: a device that saw it but
     * missed both its end and the new peek's still gets its leave entry.
     */
    prevStartedSeq: ms('prev_started_seq'),
    prevEndedSeq: ms('prev_ended_seq'),
  },
  (t) => [
    primaryKey({ columns: [t.roomId, t.userId, t.deviceId] }),
    // The room is the index's last column so that a lookup by the whole key finds one row
    // whichever of this index and the primary key the planner picks: on a table not yet
    // analysed it picked this one and read every peek of the device for each key.
    index('syncapi_peeks_device_idx').on(t.userId, t.deviceId, t.roomId),
    // Live peeks only: ended rows are kept for /sync and would otherwise fill every look for
    // the next deadline.
    index('syncapi_peeks_due_idx')
      .on(t.expiresAt)
      .where(sql`${t.endedSeq} is null`),
  ],
);

/** Remote servers peeking rooms hosted here (live peeks only). */
export const federationsenderInboundPeeks = pgTable(
  'federationsender_inbound_peeks',
  {
    roomId: text('room_id').notNull(),
    serverName: text('server_name').notNull(),
    peekId: text('peek_id').notNull(),
    shard: integer('shard').notNull(),
    createdAt: ms('created_at').notNull(),
    renewedAt: ms('renewed_at').notNull(),
    renewalIntervalMs: ms('renewal_interval_ms').notNull(),
    expiresAt: ms('expires_at').notNull(),
    /** ROOMS sequence the snapshot was taken at: the sender sends every PDU after it. */
    roomSeq: ms('room_seq').notNull(),
    startedSeq: ms('started_seq').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.roomId, t.serverName, t.peekId] }),
    // Whole key after the server, for the same reason as syncapi_peeks_device_idx.
    index('federationsender_inbound_peeks_server_idx').on(t.serverName, t.roomId, t.peekId),
    index('federationsender_inbound_peeks_due_idx').on(t.shard, t.expiresAt),
  ],
);

/** Remote rooms this server peeks (live peeks only; one per room and target server). */
export const federationsenderOutboundPeeks = pgTable(
  'federationsender_outbound_peeks',
  {
    roomId: text('room_id').notNull(),
    serverName: text('server_name').notNull(),
    peekId: text('peek_id').notNull(),
    shard: integer('shard').notNull(),
    createdAt: ms('created_at').notNull(),
    renewedAt: ms('renewed_at').notNull(),
    renewalIntervalMs: ms('renewal_interval_ms').notNull(),
    expiresAt: ms('expires_at').notNull(),
    startedSeq: ms('started_seq').notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.serverName] }), index('federationsender_outbound_peeks_due_idx').on(t.shard, t.expiresAt)],
);

/** One row per peek event: who peeked what, when, and why it ended. */
export const peekAudit = pgTable(
  'peek_audit',
  {
    seq: ms('seq').primaryKey(),
    roomId: text('room_id').notNull(),
    shard: integer('shard').notNull(),
    eventType: text('event_type').notNull(),
    kind: text('kind').notNull(),
    userId: text('user_id'),
    deviceId: text('device_id'),
    serverName: text('server_name'),
    peekId: text('peek_id'),
    at: ms('at').notNull(),
    expiresAt: ms('expires_at'),
    renewalIntervalMs: ms('renewal_interval_ms'),
    reason: text('reason'),
  },
  (t) => [
    index('peek_audit_room_idx').on(t.roomId, t.seq),
    // A row is a device's peek (user) or a server's (server), never both: each of these
    // indexes holds only the rows it can find, so a row costs one of them, not two.
    index('peek_audit_user_idx')
      .on(t.userId, t.seq)
      .where(sql`${t.userId} is not null`),
    index('peek_audit_server_idx')
      .on(t.serverName, t.seq)
      .where(sql`${t.serverName} is not null`),
    index('peek_audit_at_idx').on(t.at),
  ],
);

// ---------------------------------------------------------------------------------------
// Client API data that is not derived from the streams: accounts, devices, tokens,
// filters and room aliases are this server's own records, written directly.

export const accounts = pgTable('accounts', {
  userId: text('user_id').primaryKey(),
  passwordHash: text('password_hash'),
  createdAt: ms('created_at').notNull(),
  /** A guest account (`/register?kind=guest`): no password, limited to what guests may do, upgradable in place. */
  isGuest: boolean('is_guest').notNull().default(false),
});

export const devices = pgTable(
  'devices',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    displayName: text('display_name'),
    createdAt: ms('created_at').notNull(),
    lastSeenAt: ms('last_seen_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] })],
);

/** Access tokens, stored as SHA-256 hashes (the token itself is never stored). */
export const accessTokens = pgTable(
  'access_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [index('access_tokens_device_idx').on(t.userId, t.deviceId)],
);

export const filters = pgTable(
  'filters',
  {
    userId: text('user_id').notNull(),
    filterId: text('filter_id').notNull(),
    filter: jsonb('filter').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.filterId] })],
);

/** A user's profile: display name and avatar (reflected in their member events). */
export const profiles = pgTable('profiles', {
  userId: text('user_id').primaryKey(),
  displayName: text('display_name'),
  avatarUrl: text('avatar_url'),
});

/**
 * Positions of per-user client data (presence, account data) for /sync: each change takes
 * the next value, and the sync token carries the last one a client saw.
 */
export const clientDataStream = pgSequence('client_data_stream');

export const presence = pgTable(
  'presence',
  {
    userId: text('user_id').primaryKey(),
    /** online, offline or unavailable. */
    presence: text('presence').notNull(),
    statusMsg: text('status_msg'),
    lastActiveAt: ms('last_active_at').notNull(),
    /** The client_data_stream value of the last change. */
    streamId: ms('stream_id').notNull(),
  },
  (t) => [index('presence_stream_idx').on(t.streamId)],
);

/** Account data: global (room_id '') and per room, one JSON object per type. */
export const accountData = pgTable(
  'account_data',
  {
    userId: text('user_id').notNull(),
    roomId: text('room_id').notNull(),
    type: text('type').notNull(),
    content: jsonb('content').notNull(),
    /** The client_data_stream value of the last change. */
    streamId: ms('stream_id').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.roomId, t.type] }), index('account_data_stream_idx').on(t.userId, t.streamId)],
);

/**
 * Receipts (`POST /rooms/{roomId}/receipt/…`, `/read_markers`): the latest per room, type
 * (m.read, m.read.private), user and thread ('' for an unthreaded one).
 */
export const receipts = pgTable(
  'receipts',
  {
    roomId: text('room_id').notNull(),
    receiptType: text('receipt_type').notNull(),
    userId: text('user_id').notNull(),
    threadId: text('thread_id').notNull(),
    eventId: text('event_id').notNull(),
    /** The event's ROOMS sequence: a receipt only moves forward (one for an older event changes nothing). */
    eventSeq: ms('event_seq').notNull(),
    ts: ms('ts').notNull(),
    /** The client_data_stream value of the last change. */
    streamId: ms('stream_id').notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.receiptType, t.userId, t.threadId] }), index('receipts_room_stream_idx').on(t.roomId, t.streamId), index('receipts_stream_idx').on(t.streamId)],
);

/**
 * Typing notifications (`PUT /rooms/{roomId}/typing/{userId}`): a user types in a room
 * until `until_ts` (0: stopped). A change — start, stop, or the end of the time asked for —
 * takes a client_data_stream value, which is how a long-poll learns the list changed.
 */
export const typing = pgTable(
  'typing',
  {
    roomId: text('room_id').notNull(),
    userId: text('user_id').notNull(),
    untilTs: ms('until_ts').notNull(),
    /** The client_data_stream value of the last change. */
    streamId: ms('stream_id').notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.userId] }), index('typing_room_stream_idx').on(t.roomId, t.streamId), index('typing_stream_idx').on(t.streamId)],
);

/** The public room directory (`PUT /directory/list/room/{roomId}`): rooms listed in /publicRooms. */
export const roomDirectory = pgTable('room_directory', {
  roomId: text('room_id').primaryKey(),
  /** public or private. */
  visibility: text('visibility').notNull(),
  updatedAt: ms('updated_at').notNull(),
});

export const roomAliases = pgTable('room_aliases', {
  alias: text('alias').primaryKey(),
  roomId: text('room_id').notNull(),
  creator: text('creator').notNull(),
});

// ---------------------------------------------------------------------------------------
// The sync projection of ROOMS: every room event in stream order, and current state.

export const syncapiRoomEvents = pgTable(
  'syncapi_room_events',
  {
    /** ROOMS stream sequence: room order, and the sync position. */
    seq: ms('seq').primaryKey(),
    roomId: text('room_id').notNull(),
    eventId: text('event_id').notNull(),
    type: text('type').notNull(),
    stateKey: text('state_key'),
    sender: text('sender').notNull(),
    originServerTs: ms('origin_server_ts').notNull(),
    /** The PDU as appended (room version 10 federation format). */
    pdu: jsonb('pdu').notNull(),
    /** For an event sent here with a transaction ID: the sending device and that ID. */
    txnDeviceId: text('txn_device_id'),
    txnId: text('txn_id'),
    /** The PDU's depth: /messages walks a room in (depth, seq) order. */
    depth: ms('depth').notNull().default(0),
    /** History fetched later from another server (backfill): never new to /sync. */
    backfilled: boolean('backfilled').notNull().default(false),
  },
  (t) => [index('syncapi_room_events_room_idx').on(t.roomId, t.seq), index('syncapi_room_events_topo_idx').on(t.roomId, t.depth, t.seq), uniqueIndex('syncapi_room_events_event_idx').on(t.eventId)],
);

export const syncapiCurrentState = pgTable(
  'syncapi_current_state',
  {
    roomId: text('room_id').notNull(),
    type: text('type').notNull(),
    stateKey: text('state_key').notNull(),
    eventId: text('event_id').notNull(),
    seq: ms('seq').notNull(),
    /** For m.room.member: the membership, so "rooms this user is in" is one index scan. */
    membership: text('membership'),
    content: jsonb('content').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.roomId, t.type, t.stateKey] }),
    index('syncapi_current_state_member_idx').on(t.stateKey, t.type),
    /** Joined members by room: the public room directory counts them for every listed room. */
    index('syncapi_current_state_joined_idx')
      .on(t.roomId)
      .where(sql`${t.type} = 'm.room.member' and ${t.membership} = 'join'`),
  ],
);

// ---------------------------------------------------------------------------------------
// The federation sender's delivery state. Not read models: these record what has been
// delivered, so replaying the streams never rebuilds (and never re-sends) them.

/** Per destination and peeked room: the last ROOMS sequence delivered. */
export const federationsenderRoomCursors = pgTable(
  'federationsender_room_cursors',
  {
    destination: text('destination').notNull(),
    roomId: text('room_id').notNull(),
    sentSeq: ms('sent_seq').notNull(),
  },
  (t) => [primaryKey({ columns: [t.destination, t.roomId] })],
);

/** The one transaction in flight per destination: re-sent with the same ID after a restart. */
export const federationsenderPendingTxns = pgTable('federationsender_pending_txns', {
  destination: text('destination').primaryKey(),
  txnId: text('txn_id').notNull(),
  body: jsonb('body').notNull(),
  /** room ID → ROOMS sequence delivered once this transaction is acknowledged. */
  cursors: jsonb('cursors').notNull(),
  /** Outbox sequences this transaction delivers. */
  outboxSeqs: jsonb('outbox_seqs').notNull(),
  createdAt: ms('created_at').notNull(),
});

/** What must reach a peer besides PDUs: `expired_peeks` entries and outbound DELETEs. */
export const federationsenderOutbox = pgTable(
  'federationsender_outbox',
  {
    /** PEEKS sequence of the PeekExpired event. */
    seq: ms('seq').primaryKey(),
    destination: text('destination').notNull(),
    kind: text('kind').notNull(), // 'expired_peek' | 'delete_peek'
    roomId: text('room_id').notNull(),
    peekId: text('peek_id').notNull(),
  },
  (t) => [index('federationsender_outbox_destination_idx').on(t.destination, t.seq)],
);
