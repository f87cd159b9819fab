import type { CommandBus } from '../actors/commandBus.ts';
import type { Clock } from '../actors/roomActor.ts';
import type { Config } from '../config.ts';
import type { Db } from '../store/db.ts';
import type { FederationClient } from './client.ts';
import type { KeyRing } from './keyRing.ts';
import type { OwnKeys } from './ownKeys.ts';
import type { RemoteHistory } from './remoteHistory.ts';

/** Hooks the federation routes call into the outbound side (peeks this server makes). */
export interface OutboundHooks {
  /** Waits while an outbound peek of `roomId` is being set up (its snapshot not yet appended). */
  settled(roomId: string): Promise<void>;
  /** Whether `origin` may send us PDUs of `roomId`: the server we peek the room through. */
  accepts(origin: string, roomId: string): Promise<boolean>;
  /** The host says it expired our peek. */
  remoteExpired(origin: string, roomId: string, peekId: string): Promise<void>;
}

export interface FederationContext {
  config: Config;
  db: Db;
  bus: CommandBus;
  clock: Clock;
  keyRing: KeyRing;
  client: FederationClient;
  ownKeys: OwnKeys;
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all'): Promise<void>;
  outbound?: OutboundHooks;
  /** History of peeked rooms from their hosts (gaps in /send). */
  history?: RemoteHistory;
}

/** Peeking rooms hosted elsewhere (MSC2444, outbound); absent until federation is on. */
export interface RemoteRooms {
  /** Makes sure this server peeks the remote room, so a local device may peek it. */
  ensureOutboundPeek(roomId: string, servers: string[]): Promise<void>;
  /** Resolves a remote alias through the alias server's directory. */
  resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }>;
  /** A device that peeks rooms synced (keeps their outbound peeks alive). */
  deviceSynced(userId: string, deviceId: string): void;
}
