// Every projection peekd runs, in start order.
import { auditProjection } from './audit.ts';
import { federationOutboxProjection } from './federationOutbox.ts';
import { federationPeeksProjection } from './federationPeeks.ts';
import type { Projection } from './projection.ts';
import { syncPeeksProjection } from './syncPeeks.ts';
import { syncRoomsProjection } from './syncRooms.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- projections of both streams' event types in one list
export const PROJECTIONS: Projection<any>[] = [syncRoomsProjection, syncPeeksProjection, federationPeeksProjection, auditProjection, federationOutboxProjection];

/** The read models `replay` and `verify` work on (delivery queues are never rebuilt). */
export function readModels(name: string | undefined): Projection<unknown>[] {
  const models = PROJECTIONS.filter((p) => !p.delivery);
  if (!name || name === 'all') return models;
  const found = models.filter((p) => p.name === name);
  if (found.length === 0) throw new Error(`unknown projection ${name}; one of: ${models.map((p) => p.name).join(', ')}, all`);
  return found;
}
