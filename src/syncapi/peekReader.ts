import { and, eq, gt, isNull, or } from 'drizzle-orm';
import type { Db } from '../store/db.ts';
import { syncapiPeeks } from '../store/schema.ts';

export type DevicePeekRow = typeof syncapiPeeks.$inferSelect;

export class PeekReader {
  constructor(private readonly db: Db) {}

  /** Every peek row (live or ended) of one device. */
  async ofDevice(userId: string, deviceId: string): Promise<DevicePeekRow[]> {
    return this.db
      .select()
      .from(syncapiPeeks)
      .where(and(eq(syncapiPeeks.userId, userId), eq(syncapiPeeks.deviceId, deviceId)));
  }

  /** The rows a sync at PEEKS positions past `endedAfter` can show (syncCache.ts, `mattersAfter`). */
  async ofDeviceAfter(userId: string, deviceId: string, endedAfter: number): Promise<DevicePeekRow[]> {
    return this.db
      .select()
      .from(syncapiPeeks)
      .where(and(eq(syncapiPeeks.userId, userId), eq(syncapiPeeks.deviceId, deviceId), or(isNull(syncapiPeeks.endedSeq), gt(syncapiPeeks.endedSeq, endedAfter), eq(syncapiPeeks.endReason, 'joined'))));
  }

  /** The device's live peek rows. */
  async liveOfDevice(userId: string, deviceId: string): Promise<DevicePeekRow[]> {
    return this.db
      .select()
      .from(syncapiPeeks)
      .where(and(eq(syncapiPeeks.userId, userId), eq(syncapiPeeks.deviceId, deviceId), isNull(syncapiPeeks.endedSeq)));
  }
}
