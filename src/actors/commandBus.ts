// The one way HTTP handlers and federation code reach room actors. In one process it
// calls the local ActorHost; with roles split it is NATS request/reply to the shard owner.
import { randomUUID } from 'node:crypto';
import { isTransient, ServiceUnavailableError, withDeadline } from '../nats/errors.ts';
import type { RoomCommand } from './commands.ts';
import { DomainError } from './errors.ts';
import type { ActorHost } from './actorHost.ts';
import type { CommandResult } from './roomActor.ts';

export interface CommandBus {
  send(command: RoomCommand, commandId?: string): Promise<CommandResult>;
}

export class LocalCommandBus implements CommandBus {
  constructor(private readonly host: ActorHost) {}

  send(command: RoomCommand, commandId?: string): Promise<CommandResult> {
    return this.host.send(command, commandId);
  }
}

/**
 * Keeps trying a command, with the same command ID, while its room cannot be reached for a
 * passing reason: a shard changing owner (its host died, stopped or handed it over), a
 * NATS node down or a JetStream leader being elected. The ID makes every retry safe: the
 * room answers a command it already took from the log instead of deciding it again. Past
 * `deadlineMs` it gives up with ServiceUnavailableError (HTTP 503 with Retry-After).
 */
export class RetryingCommandBus implements CommandBus {
  constructor(
    private readonly inner: CommandBus,
    private readonly deadlineMs: number,
    private readonly onRetry?: (err: unknown, command: RoomCommand, attempt: number) => void,
  ) {}

  async send(command: RoomCommand, commandId: string = randomUUID()): Promise<CommandResult> {
    const deadline = Date.now() + this.deadlineMs;
    for (let attempt = 1, delayMs = 50; ; attempt++, delayMs = Math.min(delayMs * 2, 1000)) {
      try {
        // The attempt in flight counts against the deadline too: past it the caller gets
        // its 503 (the attempt may still land; a retry of the request finds it by its ID).
        return await withDeadline(this.inner.send(command, commandId), deadline - Date.now(), () => new ServiceUnavailableError('no answer from the room within the retry window', 2000));
      } catch (err) {
        if (err instanceof DomainError || !isTransient(err)) throw err;
        const wait = delayMs / 2 + Math.random() * (delayMs / 2);
        if (Date.now() + wait >= deadline) {
          throw new ServiceUnavailableError(`room ${command.roomId} cannot be reached right now (${(err as Error).message})`, 2000, { cause: err });
        }
        this.onRetry?.(err, command, attempt);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }
}
