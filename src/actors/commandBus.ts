// The one way HTTP handlers and federation code reach room actors. In one process it
// calls the local ActorHost; with roles split it is NATS request/reply to the shard owner.
import type { RoomCommand } from './commands';
import type { ActorHost } from './actorHost';
import type { CommandResult } from './roomActor';

export interface CommandBus {
  send(command: RoomCommand, commandId?: string): Promise<CommandResult>;
}

export class LocalCommandBus implements CommandBus {
  constructor(private readonly host: ActorHost) {}

  send(command: RoomCommand, commandId?: string): Promise<CommandResult> {
    return this.host.send(command, commandId);
  }
}
