// How commands, their results and domain errors travel over NATS request/reply.
import type { RoomCommand } from '../actors/commands.ts';
import {
  BadStateError,
  ConflictError,
  DomainError,
  ForbiddenError,
  IncompatibleRoomVersionError,
  InvalidInputError,
  LimitExceededError,
  NotFoundError,
  TooLargeError,
  BadJsonError,
} from '../actors/errors.ts';
import type { CommandResult } from '../actors/roomActor.ts';
import { isTransient, ServiceUnavailableError } from '../nats/errors.ts';

export interface CommandRequest {
  command: RoomCommand;
  commandId?: string;
}

export type CommandReply = { ok: CommandResult } | { error: { code: DomainError['code']; message: string; roomVersion?: string; retryAfterMs?: number } } | { failure: string; transient?: boolean };

/** A reply carries what the command appended and a two-field room summary, never the room's state. */
export function encodeResult(r: CommandResult): CommandReply {
  return { ok: r };
}

export function encodeError(err: unknown): CommandReply {
  if (err instanceof DomainError) {
    return {
      error: {
        code: err.code,
        message: err.message,
        roomVersion: (err as IncompatibleRoomVersionError).roomVersion,
        retryAfterMs: (err as LimitExceededError).retryAfterMs,
      },
    };
  }
  return { failure: err instanceof Error ? err.message : String(err), ...(isTransient(err) ? { transient: true } : {}) };
}

/** The result, or throws the domain error the room host raised. */
export function decodeReply(reply: CommandReply): CommandResult {
  if ('ok' in reply) return reply.ok;
  if ('error' in reply) {
    const { code, message } = reply.error;
    switch (code) {
      case 'invalid':
        throw new InvalidInputError(message);
      case 'not_found':
        throw new NotFoundError(message);
      case 'forbidden':
        throw new ForbiddenError(message);
      case 'bad_state':
        throw new BadStateError(message);
      case 'conflict':
        throw new ConflictError(message);
      case 'incompatible_room_version':
        throw new IncompatibleRoomVersionError(reply.error.roomVersion ?? '');
      case 'limit_exceeded':
        throw new LimitExceededError(message, reply.error.retryAfterMs);
      case 'too_large':
        throw new TooLargeError(message);
      case 'bad_json':
        throw new BadJsonError(message);
    }
  }
  if ('failure' in reply && reply.transient) throw new ServiceUnavailableError(`the room host could not finish: ${reply.failure}`);
  throw new Error(`the room host failed: ${'failure' in reply ? reply.failure : 'unknown reply'}`);
}
