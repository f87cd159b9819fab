// A client's write, the one way: the command goes out under the request's command ID (so
// the X-Request-Id names the envelopes it wrote), and what it appended is recorded for the
// session's next read (read your writes, src/projections/readBarrier.ts).
import type { RoomCommand } from '../../actors/commands.ts';
import type { CommandResult } from '../../actors/roomActor.ts';
import type { Session } from '../../clientapi/accounts.ts';
import { commandIdFor } from '../../requestContext.ts';
import type { ClientContext } from './context.ts';

export async function clientWrite(ctx: ClientContext, req: { id: string }, session: Session, command: RoomCommand): Promise<CommandResult> {
  const result = await ctx.bus.send(command, commandIdFor(req));
  ctx.barrier.wrote(result, session);
  return result;
}
