import { and, eq, isNull } from 'drizzle-orm';
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

  async liveRoomsOfDevice(userId: string, deviceId: string): Promise<string[]> {
    const rows = await this.db
      .select({ r: syncapiPeeks.roomId })
      .from(syncapiPeeks)
      .where(and(eq(syncapiPeeks.userId, userId), eq(syncapiPeeks.deviceId, deviceId), isNull(syncapiPeeks.endedSeq)));
    return rows.map((r) => r.r);
  }
}
