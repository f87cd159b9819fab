// Typed domain errors. The HTTP edges map each to its Matrix status and errcode in one
// place (src/http/errors.ts); nothing matches errors by their message.

export abstract class DomainError extends Error {
  abstract readonly code: DomainErrorCode;
}

export type DomainErrorCode = 'invalid' | 'not_found' | 'forbidden' | 'bad_state' | 'conflict' | 'incompatible_room_version' | 'limit_exceeded' | 'too_large' | 'bad_json';

/** A malformed identifier or argument, refused before anything is appended. */
export class InvalidInputError extends DomainError {
  override readonly name = 'InvalidInputError';
  readonly code = 'invalid' as const;
}

export class NotFoundError extends DomainError {
  override readonly name = 'NotFoundError';
  readonly code = 'not_found' as const;
}

export class ForbiddenError extends DomainError {
  override readonly name = 'ForbiddenError';
  readonly code = 'forbidden' as const;
}

/** The command does not fit the room's current state (e.g. unpeek without a peek). */
export class BadStateError extends DomainError {
  override readonly name = 'BadStateError';
  readonly code = 'bad_state' as const;
}

/** Retries of a conflicting append ran out: the room is too contended right now. */
export class ConflictError extends DomainError {
  override readonly name = 'ConflictError';
  readonly code = 'conflict' as const;
}

export class IncompatibleRoomVersionError extends DomainError {
  override readonly name = 'IncompatibleRoomVersionError';
  readonly code = 'incompatible_room_version' as const;
  constructor(readonly roomVersion: string) {
    super(`room version ${roomVersion} is not among the versions the requester supports`);
  }
}

export class LimitExceededError extends DomainError {
  override readonly name = 'LimitExceededError';
  readonly code = 'limit_exceeded' as const;
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** An event whose canonical form would exceed the Matrix PDU size limit (65,536 bytes). */
export class TooLargeError extends DomainError {
  override readonly name = 'TooLargeError';
  readonly code = 'too_large' as const;
}

/** Event content that is JSON but not canonical JSON (floats, integers past 2^53, …). */
export class BadJsonError extends DomainError {
  override readonly name = 'BadJsonError';
  readonly code = 'bad_json' as const;
}

export function isDomainError(err: unknown): err is DomainError {
  return err instanceof DomainError;
}
