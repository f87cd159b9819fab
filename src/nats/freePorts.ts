// Free loopback TCP ports for a server that must be told its port before it starts (the
// embedded nats-server; in tests and the bench, peekd processes whose server name carries
// the port).
//
// A port the kernel picks (bind to port 0) comes from its ephemeral range, the same range
// every outgoing connection's local port comes from: between closing the probe and the
// server binding the port, any connection the machine opens may take it (EADDRINUSE, seen
// when the test suite ran beside the bench). So ports are picked at random below that
// range, where only a listener can hold them, and each is checked by binding it.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

/** The lowest port tried; below it are the well-known and registered ports services use. */
const LOWEST = 10_000;
const TRIES = 64;

/** The first port of the kernel's ephemeral range (Linux), else the common default. */
function ephemeralStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(first) && first > 0) return first;
  } catch {
    // not Linux
  }
  return 32_768;
}

function listen(srv: Server, port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(null) : reject(err));
    srv.once('error', onError);
    srv.listen(port, '127.0.0.1', () => {
      srv.off('error', onError);
      const addr = srv.address();
      resolve(typeof addr === 'object' && addr ? addr.port : null);
    });
  });
}

/** `count` distinct free loopback ports (all held open until all are picked, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const top = ephemeralStart() - 1;
  const span = top - LOWEST + 1;
  const held: Server[] = [];
  try {
    const ports: number[] = [];
    while (ports.length < count) {
      let port: number | null = null;
      // Below the ephemeral range when it leaves room there; the kernel's pick otherwise.
      for (let i = 0; port === null && span >= 1_000 && i < TRIES; i++) {
        const srv = createServer();
        port = await listen(srv, LOWEST + Math.floor(Math.random() * span));
        if (port !== null) held.push(srv);
      }
      if (port === null) {
        const srv = createServer();
        port = await listen(srv, 0);
        if (port === null) throw new Error('no free loopback port');
        held.push(srv);
      }
      ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** One free loopback port (see freePorts). */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}
