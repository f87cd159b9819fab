// A room host's side of the split command bus: it answers the command subjects of the
// shards it holds leases for, running each command on its local ActorHost.
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { ActorHost } from '../actors/actorHost';
import type { Naming } from '../events/subjects';
import { encodeError, encodeResult, type CommandRequest } from './wire';

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
          msg.respond(JSON.stringify({ failure: 'malformed command request' }));
          return;
        }
        this.host.send(request.command, request.commandId).then(
          (result) => msg.respond(JSON.stringify(encodeResult(result))),
          (error) => {
            if (!(error instanceof Error && 'code' in error)) this.logger?.error({ err: error }, 'command failed');
            msg.respond(JSON.stringify(encodeError(error)));
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
