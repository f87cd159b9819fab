import { connect, type NatsConnection } from '@nats-io/transport-node';

export async function connectNats(url: string, name = 'peekd'): Promise<NatsConnection> {
  return connect({ servers: url.split(',').map((s) => s.trim()), name, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
}
