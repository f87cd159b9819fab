// "Visible once this resolves": what every write path waits for before it answers.
import type { CommandResult } from '../actors/roomActor.ts';

export type WaitForProjections = (stream: 'peeks' | 'rooms', seq: number, which?: 'sync' | 'all') => Promise<void>;

/**
 * Resolves once the projections have committed everything `result` appended: the sync
 * projections (read your writes), or with `which = 'all'` every projection of each stream.
 */
export async function settled(waitFor: WaitForProjections, result: Pick<CommandResult, 'roomEvents' | 'peekEvents'>, which: 'sync' | 'all' = 'sync'): Promise<void> {
  const rooms = result.roomEvents.at(-1)?.seq;
  const peeks = result.peekEvents.at(-1)?.seq;
  await Promise.all([rooms ? waitFor('rooms', rooms, which) : undefined, peeks ? waitFor('peeks', peeks, which) : undefined]);
}
