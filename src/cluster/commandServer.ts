// A room host's side of the split command bus: it answers the command subjects of the
// shards it holds leases for, running each command on its local ActorHost.
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { ActorHost } from '../actors/actorHost.ts';
import type { Naming } from '../events/subjects.ts';
import { encodeError, encodeResult, type CommandReply, type CommandRequest } from './wire.ts';

export class CommandServer {
  private readonly subs = new Map<number, Subscription>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly naming: Naming,
    private readonly host: ActorHost,
    private readonly logger?: Logger,
  ) {}

  serve(shard: number): void {
    if (this.subs.has(shard)) return;
    const sub = this.nc.subscribe(this.naming.commandSubject(shard), {
      callback: (err, msg) => {
        if (err) return;
        let request: CommandRequest;
        try {
          request = JSON.parse(msg.string()) as CommandRequest;
        } catch {
          respondSafely(msg, { failure: 'malformed command request' });
          return;
        }
        const respond = (reply: CommandReply) => {
          try {
            msg.respond(JSON.stringify(reply));
          } catch (err) {
            // A reply the connection cannot carry (closed, or over max_payload): the caller
            // times out and retries with the same command ID, which the room answers from the log.
            this.logger?.error({ err, room: request.command?.roomId, commandId: request.commandId }, 'could not send a command reply');
          }
        };
        this.host.send(request.command, request.commandId).then(
          (result) => respond(encodeResult(result)),
          (error) => {
            if (!(error instanceof Error && 'code' in error)) this.logger?.error({ err: error, room: request.command?.roomId }, 'command failed');
            respond(encodeError(error));
          },
        );
      },
    });
    this.subs.set(shard, sub);
  }

  /** Stops answering for `shard` and drops its rooms from memory once their commands ran. */
  async release(shard: number): Promise<void> {
    const sub = this.subs.get(shard);
    if (!sub) return;
    this.subs.delete(shard);
    sub.unsubscribe();
    await this.host.forget((roomId) => this.naming.shardOf(roomId) === shard);
  }

  async stop(): Promise<void> {
    for (const shard of [...this.subs.keys()]) await this.release(shard);
  }
}

function respondSafely(msg: { respond(data: string): boolean }, reply: CommandReply): void {
  try {
    msg.respond(JSON.stringify(reply));
  } catch {
    // the requester is gone or the connection is closing: it retries on its side
  }
}
