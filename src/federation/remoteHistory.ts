// History of rooms this server peeks on another server (MSC2444, outbound): backfill for
// /messages that runs past what is held, and get_missing_events for a gap in what the
// host sent. Every event fetched is checked (belongs to the room, content hash, the
// sender's server's signature) before it is appended, and appended once: events already
// held are left out. Backfilled events are appended as history (origin 'backfill'): they
// never change the room's state nor show in /sync as new.
import { and, eq } from 'drizzle-orm';
import type { CommandBus } from '../actors/commandBus.ts';
import type { ReceivedPdu } from '../actors/commands.ts';
import { serverOf } from '../events/ids.ts';
import type { Pdu } from '../events/roomEvents.ts';
import type { Logger } from '../logger.ts';
import type { Db } from '../store/db.ts';
import { federationsenderOutboundPeeks, syncapiCurrentState } from '../store/schema.ts';
import { eventsByIds } from './authChain.ts';
import { FederationUnreachableError, type FederationClient } from './client.ts';
import type { KeyRing } from './keyRing.ts';
import { checkPdu } from './verifyPdu.ts';
import { RoomReader } from '../syncapi/roomReader.ts';

/** The most events one backfill or get_missing_events request asks for. */
export const MAX_FETCH = 100;
/** How long one history request to the host may take. */
const FETCH_TIMEOUT_MS = 10_000;
/** The most events asked for to fill a gap before received PDUs. */
export const MISSING_EVENTS_LIMIT = 20;
/** How long filling that gap may hold up the PDUs after it. */
export const MISSING_EVENTS_TIMEOUT_MS = 5_000;

export interface RemoteHistoryDeps {
  db: Db;
  bus: CommandBus;
  client: FederationClient;
  keyRing: KeyRing;
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all'): Promise<void>;
  logger?: Logger;
}

export class RemoteHistory {
  private readonly rooms: RoomReader;

  constructor(private readonly deps: RemoteHistoryDeps) {
    this.rooms = new RoomReader(deps.db);
  }

  /** The server a room's history comes from: the one we peek it through, else the room ID's server. */
  private async hostOf(roomId: string): Promise<string> {
    const [row] = await this.deps.db.select({ server: federationsenderOutboundPeeks.serverName }).from(federationsenderOutboundPeeks).where(eq(federationsenderOutboundPeeks.roomId, roomId)).limit(1);
    return row?.server ?? serverOf(roomId);
  }

  private async roomVersion(roomId: string): Promise<string> {
    const [row] = await this.deps.db
      .select({ content: syncapiCurrentState.content })
      .from(syncapiCurrentState)
      .where(and(eq(syncapiCurrentState.roomId, roomId), eq(syncapiCurrentState.type, 'm.room.create'), eq(syncapiCurrentState.stateKey, '')));
    const v = (row?.content as { room_version?: unknown } | undefined)?.room_version;
    return typeof v === 'string' ? v : '1';
  }

  /** Checks fetched PDUs; returns those of the room that pass and are not yet held, oldest first. */
  private async accept(roomId: string, raw: unknown, host: string): Promise<ReceivedPdu[]> {
    if (!Array.isArray(raw)) throw new FederationUnreachableError(`${host} answered without a list of events`);
    const version = await this.roomVersion(roomId);
    const byId = new Map<string, ReceivedPdu>();
    for (const item of raw.slice(0, MAX_FETCH)) {
      if ((item as { room_id?: unknown } | null)?.room_id !== roomId) {
        this.deps.logger?.warn({ roomId, host }, 'history from the host holds an event of another room; left out');
        continue;
      }
      const checked = await checkPdu(item, version, this.deps.keyRing);
      if (!checked.ok) {
        this.deps.logger?.warn({ roomId, host, reason: checked.error }, 'an event of fetched history failed its checks; left out');
        continue;
      }
      byId.set(checked.eventId, { eventId: checked.eventId, pdu: checked.pdu as Pdu });
    }
    const held = new Set((await eventsByIds(this.deps.db, [...byId.keys()])).map((e) => e.eventId));
    return [...byId.values()].filter((p) => !held.has(p.eventId)).sort((a, b) => a.pdu.depth - b.pdu.depth);
  }

  /**
   * Fetches history before (and including) `from` from the room's host and appends what is
   * new as history. Returns how many events were stored; throws FederationUnreachableError
   * when the host cannot be asked or refuses.
   */
  async backfill(roomId: string, from: string[], limit: number): Promise<number> {
    const host = await this.hostOf(roomId);
    try {
      return await this.fetchHistory(roomId, host, from, limit);
    } catch (err) {
      this.deps.logger?.warn({ roomId, host, err: (err as Error).message }, 'backfill failed; /messages answers with what is held');
      throw err;
    }
  }

  private async fetchHistory(roomId: string, host: string, from: string[], limit: number): Promise<number> {
    const query = [...from.map((v) => `v=${encodeURIComponent(v)}`), `limit=${Math.min(Math.max(limit, 1), MAX_FETCH)}`].join('&');
    const res = await this.deps.client.request<{ pdus?: unknown; errcode?: string }>(
      host,
      'GET',
      `/_matrix/federation/v1/backfill/${encodeURIComponent(roomId)}?${query}`,
      undefined,
      FETCH_TIMEOUT_MS,
    );
    if (res.status !== 200) throw new FederationUnreachableError(`${host} answered backfill of ${roomId} with ${res.status} ${res.body.errcode ?? ''}`.trim());
    const fresh = await this.accept(roomId, res.body.pdus, host);
    if (fresh.length === 0) return 0;
    const result = await this.deps.bus.send({ type: 'ReceivePdus', roomId, origin: host, pdus: fresh, history: true });
    const last = result.roomEvents.at(-1);
    if (last) await this.deps.waitForProjections('rooms', last.seq);
    this.deps.logger?.debug({ roomId, host, stored: result.roomEvents.length }, 'backfilled');
    return result.roomEvents.length;
  }

  /**
   * The events between what we hold (`earliest`) and PDUs whose prev_events we lack
   * (`latest`), from `origin`, checked and not yet held, oldest first. At most `limit`;
   * bounded in time. They are returned, not appended: they go in with the PDUs they precede.
   */
  async missingEvents(roomId: string, origin: string, earliest: string[], latest: string[], limit = 10, timeoutMs = 5_000): Promise<ReceivedPdu[]> {
    const res = await this.deps.client.request<{ events?: unknown; errcode?: string }>(
      origin,
      'POST',
      `/_matrix/federation/v1/get_missing_events/${encodeURIComponent(roomId)}`,
      { earliest_events: earliest, latest_events: latest, limit: Math.min(limit, MAX_FETCH), min_depth: 0 },
      timeoutMs,
    );
    if (res.status !== 200) throw new FederationUnreachableError(`${origin} answered get_missing_events of ${roomId} with ${res.status} ${res.body.errcode ?? ''}`.trim());
    return this.accept(roomId, res.body.events, origin);
  }

  /**
   * `pdus` from `origin`, preceded by the events of a gap before them. A PDU we do not hold
   * whose prev_events we hold neither here nor among `pdus` follows events the host did not
   * send us (our peek lapsed, or was restarted, while they were sent): the events between
   * the newest live event we hold and those PDUs are asked for with get_missing_events (at
   * most `limit`, within `timeoutMs`) and go in before them. PDUs we already hold are not
   * asked about (a re-peek's snapshot repeats the state we have). With no live event here
   * (a first peek), or when the host cannot fill the gap, `pdus` unchanged: /messages
   * backfills the gap later.
   */
  async withMissingEvents(roomId: string, origin: string, pdus: ReceivedPdu[], limit = MISSING_EVENTS_LIMIT, timeoutMs = MISSING_EVENTS_TIMEOUT_MS): Promise<ReceivedPdu[]> {
    const inBatch = new Set(pdus.map((p) => p.eventId));
    const prevs = [...new Set(pdus.flatMap((p) => p.pdu.prev_events))].filter((id) => !inBatch.has(id));
    if (prevs.length === 0) return pdus;
    const held = new Set((await eventsByIds(this.deps.db, [...prevs, ...inBatch])).map((e) => e.eventId));
    const after = pdus.filter((p) => !held.has(p.eventId) && p.pdu.prev_events.some((id) => !inBatch.has(id) && !held.has(id)));
    if (after.length === 0) return pdus;
    const newest = await this.rooms.newestLiveEvent(roomId);
    if (!newest) return pdus;
    try {
      const missing = await this.missingEvents(
        roomId,
        origin,
        [newest.eventId],
        after.map((p) => p.eventId),
        limit,
        timeoutMs,
      );
      return [...missing.filter((m) => !inBatch.has(m.eventId)), ...pdus];
    } catch (err) {
      this.deps.logger?.warn({ roomId, origin, err: (err as Error).message }, 'could not fill the gap before received events; /messages backfills it later');
      return pdus;
    }
  }
}
