// What the client API handlers use. They reach room actors only through the command bus.
import type { CommandBus } from '../../actors/commandBus.ts';
import type { Clock } from '../../actors/roomActor.ts';
import type { AccountStore } from '../../clientapi/accounts.ts';
import type { Config } from '../../config.ts';
import type { Db } from '../../store/db.ts';
import type { PeekReader } from '../../syncapi/peekReader.ts';
import type { RoomReader } from '../../syncapi/roomReader.ts';
import type { SyncService } from '../../syncapi/sync.ts';
import type { RemoteHistory } from '../../federation/remoteHistory.ts';
import type { ReadBarrier } from '../../projections/readBarrier.ts';
import type { RemoteRooms } from '../../federation/context.ts';

export type { RemoteRooms } from '../../federation/context.ts';

export interface ClientContext {
  config: Config;
  db: Db;
  accounts: AccountStore;
  rooms: RoomReader;
  peeks: PeekReader;
  sync: SyncService;
  bus: CommandBus;
  clock: Clock;
  waitForProjections(stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all'): Promise<void>;
  /** Read your writes: writes record what they appended, reads wait for it (readBarrier.ts). */
  barrier: ReadBarrier;
  remote?: RemoteRooms;
  /** History of peeked remote rooms from their hosts (backfill); absent until federation is on. */
  history?: RemoteHistory;
}
