import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';

/** Another writer appended to the room subject first: reload, decide again. */
export class ConcurrencyError extends Error {
  override readonly name = 'ConcurrencyError';
  constructor(
    readonly subject: string,
    readonly expectedSeq: number,
    options?: ErrorOptions,
  ) {
    super(`stale writer on ${subject}: expected last sequence ${expectedSeq}`, options);
  }
}

export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

export class ShardCountMismatchError extends Error {
  override readonly name = 'ShardCountMismatchError';
  constructor(
    readonly stream: string,
    readonly configured: number,
    readonly recorded: number,
  ) {
    super(
      `stream ${stream} was created with ${recorded} shards but PEEKD_SHARDS is ${configured}; ` +
        `the shard count is fixed when the streams are created (set PEEKD_SHARDS=${recorded}, or use a new PEEKD_STREAM_PREFIX)`,
    );
  }
}
