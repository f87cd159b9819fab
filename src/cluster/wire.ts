// How commands, their results and domain errors travel over NATS request/reply.
import type { RoomCommand } from '../actors/commands';
import {
  BadStateError,
  ConflictError,
  DomainError,
  ForbiddenError,
  IncompatibleRoomVersionError,
  InvalidInputError,
  LimitExceededError,
  NotFoundError,
} from '../actors/errors';
import type { CommandResult } from '../actors/roomActor';
import { deserializeState, serializeState } from '../actors/snapshots';

export interface CommandRequest {
  command: RoomCommand;
  commandId?: string;
}

export type CommandReply =
  | { ok: { state: string; peekEvents: CommandResult['peekEvents']; roomEvents: CommandResult['roomEvents']; existingEventId?: string; conflicts: number } }
  | { error: { code: DomainError['code']; message: string; roomVersion?: string; retryAfterMs?: number } }
  | { failure: string };

export function encodeResult(r: CommandResult): CommandReply {
  return {
    ok: { state: serializeState(r.state), peekEvents: r.peekEvents, roomEvents: r.roomEvents, existingEventId: r.existingEventId, conflicts: r.conflicts },
  };
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
  return { failure: err instanceof Error ? err.message : String(err) };
}

/** The result, or throws the domain error the room host raised. */
export function decodeReply(reply: CommandReply): CommandResult {
  if ('ok' in reply) {
    const state = deserializeState(reply.ok.state);
    if (!state) throw new Error('a room host answered with a state this version cannot read');
    return { state, peekEvents: reply.ok.peekEvents, roomEvents: reply.ok.roomEvents, existingEventId: reply.ok.existingEventId, conflicts: reply.ok.conflicts };
  }
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
    }
  }
  throw new Error(`the room host failed: ${'failure' in reply ? reply.failure : 'unknown reply'}`);
}
