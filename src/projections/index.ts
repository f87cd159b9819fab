// Every projection peekd runs, in start order.
import { auditProjection } from './audit';
import { federationOutboxProjection } from './federationOutbox';
import { federationPeeksProjection } from './federationPeeks';
import type { Projection } from './projection';
import { syncPeeksProjection } from './syncPeeks';
import { syncRoomsProjection } from './syncRooms';

export const PROJECTIONS: Projection<any>[] = [
  syncRoomsProjection,
  syncPeeksProjection,
  federationPeeksProjection,
  auditProjection,
  federationOutboxProjection,
];

/** The read models `replay` and `verify` work on (delivery queues are never rebuilt). */
export function readModels(name: string | undefined): Projection<unknown>[] {
  const models = PROJECTIONS.filter((p) => !p.delivery);
  if (!name || name === 'all') return models;
  const found = models.filter((p) => p.name === name);
  if (found.length === 0) throw new Error(`unknown projection ${name}; one of: ${models.map((p) => p.name).join(', ')}, all`);
  return found;
}
