// The failover acceptance test. Two scenarios under load, each with its own 3-node JetStream
// cluster, database, stream prefix and peekd instances (test/helpers/failoverScenarios.ts):
//   - NATS node loss: the node leading PEEKS is SIGKILLed and restarted;
//   - room host loss: one of three room hosts crashes;
// then the invariants of test/helpers/failoverLoad.ts (a–e, and f: no unexpected 4xx). And a
// fast one: a decision's events are one message, so a connection cut between them (or after
// the publish, before its ack) leaves all of them or none, and the retried command (same
// command ID, another host) yields the whole decision exactly once.
//
// Two modes, by the globalSetup's databaseUrl(); both run, nothing is skipped:
//   - Postgres (CI sets DATABASE_URL; the main mode): the scenarios' peekd run as processes on a
//     database of their own, the room host is SIGKILLed, invariant e runs `peekd verify`;
//   - no Postgres (a machine with only Node and nats-server): embedded PGlite. Node loss: the
//     one peekd process on PGlite in its data dir. Room host loss: four in-process instances on
//     one in-memory PGlite (processes cannot share it), the crash an abrupt close of the room
//     host's NATS connection (its leases lapse). Invariant e through the admin API verify.
// The test names say which mode ran.
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActorHost } from '../../src/actors/actorHost.ts';
import type { PduDraft, RoomCommand } from '../../src/actors/commands.ts';
import type { Clock } from '../../src/actors/roomActor.ts';
import { generateSigningKey, type SigningKey } from '../../src/crypto/index.ts';
import { encodeEnvelope } from '../../src/events/envelope.ts';
import { decodePeekEnvelope, type PeekEvent } from '../../src/events/peekEvents.ts';
import { decodeRoomEnvelope } from '../../src/events/roomEvents.ts';
import { SigningPduFactory } from '../../src/matrix/pduFactory.ts';
import { EventLog } from '../../src/nats/eventLog.ts';
import { formatViolations, INVARIANTS } from '../helpers/failoverLoad.ts';
import { formatScenario, nodeLossScenario, roomHostLossScenario, type ScenarioResult } from '../helpers/failoverScenarios.ts';
import { createTestStreams, databaseUrl, natsUrl, uniqueName, type TestStreams } from '../helpers/services.ts';

/** '' without Postgres: the scenarios' fallback (embedded PGlite). */
const DATABASE_URL = databaseUrl();
const POSTGRES = DATABASE_URL !== '';

/** Prints the scenario and fails with every violation and the log lines of the requests concerned. */
function expectNoViolations(r: ScenarioResult): void {
  console.info(formatScenario(r));
  for (const n of r.notes) console.info(`  note: ${n}`);
  if (r.violations.length === 0) return;
  const kinds = [...new Set(r.violations.map((x) => x.invariant))].map((k) => `  ${k}: ${INVARIANTS[k]}`).join('\n');
  const text = `${r.name}: ${r.violations.length} invariant violations\n${kinds}\n${formatViolations(r.violations, r.logs)}`;
  console.error(text);
  expect.fail(text);
}

describe('failover under load', () => {
  const nodeLossName = POSTGRES
    ? 'NATS node loss: the PEEKS leader SIGKILLed and restarted (Postgres, peekd process, peekd verify)'
    : 'NATS node loss: the PEEKS leader SIGKILLed and restarted (no Postgres: peekd process on embedded PGlite, admin API verify)';
  it(nodeLossName, { timeout: 150_000 }, async () => {
    const result = await nodeLossScenario({ databaseUrl: DATABASE_URL, log: (l) => console.info(l) });
    expectNoViolations(result);
    expect(result.counts.requests).toBeGreaterThan(0);
  });

  const roomHostLossName = POSTGRES
    ? 'room host loss: one of three room host processes SIGKILLed (Postgres, peekd verify)'
    : "room host loss: one of three in-process room hosts' NATS connection closed abruptly (no Postgres: one in-memory PGlite, admin API verify)";
  it(roomHostLossName, { timeout: 150_000 }, async () => {
    const result = await roomHostLossScenario({ databaseUrl: DATABASE_URL, log: (l) => console.info(l) });
    expectNoViolations(result);
    expect(result.counts.requests).toBeGreaterThan(0);
    expect(result.counts.maxLatencyMs).toBeLessThanOrEqual(20_000);
  });
});

// ------------------------------------------------------------------------------------------
// All or none

/**
 * A TCP proxy in front of NATS that can fail one publish on purpose:
 *   - `cutBetweenEvents(subject)`: forwards the client's bytes up to the end of the first event
 *     of the next message published to `subject`, then closes both sides (a crash in the
 *     middle of writing a decision);
 *   - `loseAck(subject)`: forwards that message whole but nothing more from the server, so
 *     the publisher never sees the ack; `cut()` then closes both sides.
 */
class FaultyProxy {
  private server?: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private mode: { kind: 'pass' } | { kind: 'cut' | 'lose-ack'; marker: Buffer; resolve: (info: { prefix: string }) => void } = { kind: 'pass' };
  port = 0;

  constructor(
    private readonly upstreamHost: string,
    private readonly upstreamPort: number,
  ) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = netConnect(this.upstreamPort, this.upstreamHost);
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      let blocked = false; // lose-ack: nothing more from the server
      let pending = Buffer.alloc(0);
      upstream.on('data', (d) => {
        if (!blocked) client.write(d);
      });
      client.on('data', (d) => {
        const mode = this.mode;
        if (mode.kind === 'pass' || blocked) {
          upstream.write(d);
          return;
        }
        pending = Buffer.concat([pending, d]);
        const start = pending.indexOf(mode.marker);
        if (start < 0) {
          // Not yet: pass on all but a tail that is the start of the marker (never hold back
          // other traffic: its sender may be waiting for an answer).
          let keep = Math.min(pending.length, mode.marker.length - 1);
          while (keep > 0 && !pending.subarray(pending.length - keep).equals(mode.marker.subarray(0, keep))) keep--;
          upstream.write(pending.subarray(0, pending.length - keep));
          pending = pending.subarray(pending.length - keep);
          return;
        }
        if (mode.kind === 'lose-ack') {
          blocked = true;
          this.mode = { kind: 'pass' };
          upstream.write(pending);
          pending = Buffer.alloc(0);
          mode.resolve({ prefix: '' });
          return;
        }
        // Cut right after the first event of the envelope: `…}` of event 0, before `,{"type":` of event 1.
        const between = pending.indexOf('},{"type":"', start);
        if (between < 0) return; // wait for more bytes
        const sent = pending.subarray(0, between + 1);
        this.mode = { kind: 'pass' };
        upstream.write(sent, () => {
          upstream.destroy();
          client.destroy();
          mode.resolve({ prefix: sent.subarray(start).toString('utf8') });
        });
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
  }

  private arm(kind: 'cut' | 'lose-ack', subject: string): Promise<{ prefix: string }> {
    return new Promise((resolve) => (this.mode = { kind, marker: Buffer.from(`HPUB ${subject} `), resolve }));
  }

  cutBetweenEvents(subject: string): Promise<{ prefix: string }> {
    return this.arm('cut', subject);
  }

  loseAck(subject: string): Promise<{ prefix: string }> {
    return this.arm('lose-ack', subject);
  }

  /** Closes every proxied connection (both sides). */
  cut(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const SERVER = 'crash.example.org';
const ALICE = `@alice:${SERVER}`;
const T0 = 1_700_000_000_000;
const clock: Clock = { now: () => T0 };

function createRoomCommand(roomId: string): RoomCommand {
  const events: PduDraft[] = [
    { type: 'm.room.create', sender: ALICE, state_key: '', content: { room_version: '10' } },
    { type: 'm.room.member', sender: ALICE, state_key: ALICE, content: { membership: 'join' } },
    { type: 'm.room.power_levels', sender: ALICE, state_key: '', content: { users: { [ALICE]: 100 }, users_default: 0, events_default: 0, state_default: 50 } },
    { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'public' } },
    { type: 'm.room.history_visibility', sender: ALICE, state_key: '', content: { history_visibility: 'world_readable' } },
  ];
  return { type: 'CreateRoom', roomId, roomVersion: '10', events };
}

async function within<T>(what: string, p: Promise<T>, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, error };
  }
}

describe('a crash between the events of one decision leaves all or none', () => {
  let streams: TestStreams;
  let log: EventLog;
  let proxy: FaultyProxy;
  let key: SigningKey;
  const hosts: ActorHost[] = [];
  const conns: NatsConnection[] = [];

  beforeAll(async () => {
    streams = await createTestStreams(8);
    log = await EventLog.open(streams.nc, streams.naming);
    const first = new URL(
      natsUrl()
        .split(',')[0]!
        .trim()
        .replace(/^nats:\/\//, 'nats://'),
    );
    proxy = new FaultyProxy(first.hostname, Number(first.port || 4222));
    await proxy.start();
    key = generateSigningKey();
  });

  afterAll(async () => {
    for (const h of hosts) await h.stop().catch(() => undefined);
    for (const c of conns) await c.close().catch(() => undefined);
    await proxy?.stop();
    await streams?.cleanup();
  });

  const newHost = (l: EventLog): ActorHost => {
    const h = new ActorHost({
      log: l,
      clock,
      pduFactory: new SigningPduFactory(SERVER, key),
      settings: { serverName: SERVER, peekLifetimeMs: 3_600_000, inboundRenewalIntervalMs: 3_600_000, maxConflictRetries: 16 },
    });
    hosts.push(h);
    return h;
  };

  /** A host whose NATS connection goes through the proxy and never reconnects (it "crashes"). */
  const crashingHost = async (): Promise<ActorHost> => {
    const nc = await connect({ servers: `127.0.0.1:${proxy.port}`, name: 'crashing-host', reconnect: false, ignoreClusterUpdates: true, timeout: 5_000 });
    conns.push(nc);
    return newHost(await EventLog.open(nc, streams.naming));
  };

  /** The room's ROOMS messages, decoded. */
  const roomsMessages = async (roomId: string) => (await log.read('rooms', roomId)).map((r) => ({ seq: r.seq, ...decodeRoomEnvelope(r.data) }));

  it('CreateRoom is one ROOMS message holding all its PDUs', async () => {
    const roomId = `!whole.${uniqueName()}:${SERVER}`;
    const result = await newHost(log).send(createRoomCommand(roomId), 'cmd-whole');
    expect(result.roomEvents).toHaveLength(5);
    const msgs = await roomsMessages(roomId);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]!.commandId).toBe('cmd-whole');
    expect(msgs[0]!.events.map((e) => e?.pdu.type)).toEqual(['m.room.create', 'm.room.member', 'm.room.power_levels', 'm.room.join_rules', 'm.room.history_visibility']);
    expect(msgs[0]!.events.map((e) => e?.eventId)).toEqual(result.roomEvents.map((e) => e.event.eventId));
  });

  it('a connection cut between the first and second event of CreateRoom leaves none of them; the retry writes all, once', async () => {
    const roomId = `!cut.${uniqueName()}:${SERVER}`;
    const commandId = `cmd-cut-${uniqueName()}`;
    const crashing = await crashingHost();
    const cutDone = proxy.cutBetweenEvents(streams.naming.roomSubject('rooms', roomId));
    const outcome = await within('the crashing CreateRoom', settle(crashing.send(createRoomCommand(roomId), commandId)));
    const { prefix } = await within('the cut', cutDone);
    // The server did receive the start of the message: its header and the first event whole.
    expect(prefix.startsWith(`HPUB ${streams.naming.roomSubject('rooms', roomId)} `)).toBe(true);
    expect(prefix).toContain('"m.room.create"');
    expect(prefix).not.toContain('"m.room.member"');
    expect(outcome.ok, 'the publish cannot have succeeded').toBe(false);

    // None of the decision's events is in the log.
    expect(await log.lastSeq('rooms', roomId)).toBe(0);
    expect(await roomsMessages(roomId)).toEqual([]);
    expect(await log.lastSeq('peeks', roomId)).toBe(0);

    // The same command on another host: the whole decision, once.
    const retried = await newHost(log).send(createRoomCommand(roomId), commandId);
    expect(retried.roomEvents).toHaveLength(5);
    let msgs = await roomsMessages(roomId);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]!.commandId).toBe(commandId);
    expect(msgs[0]!.events).toHaveLength(5);
    expect(msgs[0]!.events.map((e) => e?.eventId)).toEqual(retried.roomEvents.map((e) => e.event.eventId));

    // And once more (a third host): answered from the log, nothing appended.
    const again = await newHost(log).send(createRoomCommand(roomId), commandId);
    expect(again.roomEvents.map((e) => e.event.eventId)).toEqual(retried.roomEvents.map((e) => e.event.eventId));
    msgs = await roomsMessages(roomId);
    expect(msgs).toHaveLength(1);
  });

  it('a publish whose ack is lost leaves the whole decision; the retry (same command ID, another host) adds nothing', async () => {
    const roomId = `!ack.${uniqueName()}:${SERVER}`;
    const commandId = `cmd-ack-${uniqueName()}`;
    const crashing = await crashingHost();
    const seen = proxy.loseAck(streams.naming.roomSubject('rooms', roomId));
    const pending = settle(crashing.send(createRoomCommand(roomId), commandId));
    await within('the publish to reach the proxy', seen);
    // The message is stored although its publisher never hears so…
    const deadline = Date.now() + 10_000;
    while ((await log.lastSeq('rooms', roomId)) === 0) {
      if (Date.now() > deadline) throw new Error('the publish was not stored');
      await new Promise((r) => setTimeout(r, 20));
    }
    // …then the host "crashes".
    proxy.cut();
    const outcome = await within('the crashing CreateRoom', pending);
    expect(outcome.ok, 'the publisher cannot have seen its ack').toBe(false);

    let msgs = await roomsMessages(roomId);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]!.commandId).toBe(commandId);
    expect(msgs[0]!.events).toHaveLength(5);
    const logged = msgs[0]!.events.map((e) => e?.eventId);

    const retried = await newHost(log).send(createRoomCommand(roomId), commandId);
    expect(retried.roomEvents.map((e) => e.event.eventId)).toEqual(logged);
    msgs = await roomsMessages(roomId);
    expect(msgs).toHaveLength(1);
  });

  it('EventLog: a multi-event PEEKS envelope cut mid-publish is absent; appended again with its command ID it is there once', async () => {
    const roomId = `!env.${uniqueName()}:${SERVER}`;
    const commandId = `cmd-env-${uniqueName()}`;
    const events: PeekEvent[] = [1, 2, 3].map((i) => ({
      type: 'PeekStarted',
      v: 1,
      roomId,
      peek: { kind: 'device', userId: `@p${i}:${SERVER}`, deviceId: `D${i}` },
      at: T0,
      expiresAt: T0 + 3_600_000,
    }));
    const envelope = encodeEnvelope(commandId, events);
    const nc = await connect({ servers: `127.0.0.1:${proxy.port}`, name: 'crashing-writer', reconnect: false, ignoreClusterUpdates: true, timeout: 5_000 });
    conns.push(nc);
    const crashingLog = await EventLog.open(nc, streams.naming);
    const cutDone = proxy.cutBetweenEvents(streams.naming.roomSubject('peeks', roomId));
    const outcome = await within('the cut append', settle(crashingLog.append('peeks', roomId, envelope, 0, commandId)));
    const { prefix } = await within('the cut', cutDone);
    expect(prefix).toContain('"D1"');
    expect(prefix).not.toContain('"D2"');
    expect(outcome.ok).toBe(false);
    expect(await log.read('peeks', roomId)).toEqual([]);

    const first = await log.append('peeks', roomId, envelope, 0, commandId);
    expect(first.duplicate).toBe(false);
    const second = await log.append('peeks', roomId, envelope, 0, commandId);
    expect(second).toEqual({ seq: first.seq, duplicate: true });
    const stored = await log.read('peeks', roomId);
    expect(stored).toHaveLength(1);
    const decoded = decodePeekEnvelope(stored[0]!.data);
    expect(decoded.commandId).toBe(commandId);
    expect(decoded.events).toEqual(events);
  });
});
