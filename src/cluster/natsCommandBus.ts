// The command bus when roles are split: a command goes to its room's shard over NATS
// request/reply and is run by whichever room host holds that shard's lease.
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import type { CommandBus } from '../actors/commandBus.ts';
import type { RoomCommand } from '../actors/commands.ts';
import type { CommandResult } from '../actors/roomActor.ts';
import { validateCommand } from '../actors/validateCommand.ts';
import type { Naming } from '../events/subjects.ts';
import { ServiceUnavailableError } from '../nats/errors.ts';
import { decodeReply, type CommandReply, type CommandRequest } from './wire.ts';

export class NoRoomHostError extends ServiceUnavailableError {
  override readonly name = 'NoRoomHostError';
}

/**
 * One attempt per call: the command goes to whichever room host answers its shard's
 * subject. No host (a lease being taken over) is NoRoomHostError; a host that does not
 * answer within `requestTimeoutMs` (it died with the command in flight) is a timeout.
 * Both are transient: RetryingCommandBus tries again with the same command ID.
 */
export class NatsCommandBus implements CommandBus {
  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    private readonly requestTimeoutMs = 5_000,
  ) {}

  async send(command: RoomCommand, commandId: string = randomUUID()): Promise<CommandResult> {
    const invalid = validateCommand(command);
    if (invalid) throw invalid;
    const shard = this.naming.shardOf(command.roomId);
    const payload = JSON.stringify({ command, commandId } satisfies CommandRequest);
    let msg;
    try {
      msg = await this.nc.request(this.naming.commandSubject(shard), payload, { timeout: this.requestTimeoutMs });
    } catch (err) {
      if (err instanceof Error && /no responders|503/i.test(`${err.message} ${(err as { code?: unknown }).code ?? ''}`)) {
        throw new NoRoomHostError(`no room host serves shard ${shard}`, 1000, { cause: err });
      }
      throw err;
    }
    return decodeReply(JSON.parse(msg.string()) as CommandReply);
  }
}
