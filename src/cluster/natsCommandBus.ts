// The command bus when roles are split: a command goes to its room's shard over NATS
// request/reply and is run by whichever room host holds that shard's lease.
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import type { CommandBus } from '../actors/commandBus';
import type { RoomCommand } from '../actors/commands';
import type { CommandResult } from '../actors/roomActor';
import { validateCommand } from '../actors/validateCommand';
import type { Naming } from '../events/subjects';
import { decodeReply, type CommandReply, type CommandRequest } from './wire';

export class NoRoomHostError extends Error {
  override readonly name = 'NoRoomHostError';
}

export class NatsCommandBus implements CommandBus {
  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    /** How long to keep asking while no host holds the shard (a lease is being taken over). */
    private readonly waitForHostMs = 20_000,
  ) {}

  async send(command: RoomCommand, commandId: string = randomUUID()): Promise<CommandResult> {
    const invalid = validateCommand(command);
    if (invalid) throw invalid;
    const subject = this.naming.commandSubject(this.naming.shardOf(command.roomId));
    const payload = JSON.stringify({ command, commandId } satisfies CommandRequest);
    const deadline = Date.now() + this.waitForHostMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        const msg = await this.nc.request(subject, payload, { timeout: 30_000 });
        return decodeReply(JSON.parse(msg.string()) as CommandReply);
      } catch (err) {
        // No responders: no host holds this shard right now. The same command ID makes a
        // retry safe even if an earlier attempt did run (JetStream dedupes the appends).
        const noHost = err instanceof Error && /no responders|503/i.test(`${err.message} ${(err as { code?: unknown }).code ?? ''}`);
        if (!noHost) throw err;
        if (Date.now() + delay > deadline) throw new NoRoomHostError(`no room host serves shard ${this.naming.shardOf(command.roomId)}`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}
