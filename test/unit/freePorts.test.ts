// Ports for servers told their port before they start: distinct, bindable, and outside the
// kernel's ephemeral range, from which every outgoing connection takes its local port (a
// port probed there could be taken before the server binds it).
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePorts } from '../../src/nats/freePorts.ts';

const bind = (port: number) =>
  new Promise<Server>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });

describe('freePorts', () => {
  it('gives distinct ports below the ephemeral range, each of which a server can bind', async () => {
    const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const ports = await freePorts(20);
    expect(new Set(ports).size).toBe(20);
    for (const p of ports) {
      expect(p).toBeGreaterThanOrEqual(10_000);
      expect(p).toBeLessThan(ephemeralStart);
    }
    const servers = await Promise.all(ports.map(bind));
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });
});
