// What the client API handlers use. They reach room actors only through the command bus.
import type { CommandBus } from '../../actors/commandBus';
import type { Clock } from '../../actors/roomActor';
import type { AccountStore } from '../../clientapi/accounts';
import type { Config } from '../../config';
import type { Db } from '../../store/db';
import type { PeekReader } from '../../syncapi/peekReader';
import type { RoomReader } from '../../syncapi/roomReader';
import type { SyncService } from '../../syncapi/sync';
import type { RemoteHistory } from '../../federation/remoteHistory';
import type { ReadBarrier } from '../../projections/readBarrier';
import type { RemoteRooms } from '../../federation/context';

export type { RemoteRooms } from '../../federation/context';

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
