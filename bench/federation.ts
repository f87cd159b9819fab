// The "federation" scenario: inbound PUT /peek latency for a room with 1,000 state
// events; events per second fanned out to 100 peeking servers (fake peers in their own
// process that count what arrives); signature verifications per second through peekd's
// verifiers against raw node:crypto and tweetnacl.
import { Child } from './ipc.ts';
import {
  coresReport,
  cpuBetween,
  cpuSample,
  fmtNum,
  log,
  logPath,
  percentile,
  profilePath,
  round,
  startLoadChild,
  startPeekdChild,
  uniqueName,
  until,
  type Row,
  type ScenarioResult,
} from './harness.ts';
import { describeProfile, profiled } from './profile.ts';
import { profiles, type Scenario } from './scenario.ts';
import { describeTrace, type TraceLine } from './trace.ts';

interface PeekAnswer {
  status: number;
  bytes: number;
  ms: number;
  text: string;
}

interface Rate {
  ops: number;
  perSecond: number;
  allTrue: boolean;
}

interface VerifyOut {
  messageBytes: number;
  pduBytes: number;
  nodeNative: Rate;
  tweetnacl: Rate;
  peekdPrimitive: Rate;
  peekdPduVerifier: Rate;
  peekdRequestVerifier: Rate;
  nodeNativeRequest: Rate;
  checkPduPerSecond: number;
}

export const federation: Scenario = {
  name: 'federation',
  summary: 'PUT /peek latency (1,000 state events), fan-out to 100 peeking servers, signature verifications vs native',
  async run(ctx): Promise<ScenarioResult> {
    const { services } = ctx;
    const peerCount = ctx.quick ? 10 : 100;
    const stateEvents = ctx.quick ? 200 : 1000;
    const samples = ctx.quick ? 10 : 30;
    const fanout = ctx.quick ? 50 : 100;
    const tag = uniqueName('').slice(0, 8);
    const peers = await Child.start({ module: 'peers', logFile: logPath('federation-peers') });
    const notes: string[] = [];
    let server: Awaited<ReturnType<typeof startPeekdChild>> | undefined;
    let load: Child | undefined;
    try {
      const list = await peers.call<{ name: string; url: string }[]>('start', { count: peerCount, tag });
      const destinations = Object.fromEntries(list.map((p) => [p.name, p.url]));
      server = await startPeekdChild(services, { label: 'federation', env: { PEEKD_FEDERATION_DESTINATIONS: JSON.stringify(destinations) } });
      await peers.call('target', { name: server.serverName, url: server.url });
      const creator = `@bench:${server.serverName}`;
      const [bigRoom, fanRoom] = await server.child.call<string[]>('createRooms', { count: 2, creator });
      log(`federation: ${stateEvents} state events in one room`);
      await server.child.call('sendEvents', { roomId: bigRoom, sender: creator, count: stateEvents, perCommand: 50, stateKeyPrefix: 's', padBytes: 64 }, 900_000);

      // Every peer peeks the small room first: peekd fetches and caches each peer's key here.
      log(`federation: ${peerCount} peers PUT /peek the fan-out room`);
      const joined = await peers.call<PeekAnswer[]>('peek', { roomId: fanRoom, from: 0, to: peerCount, idPrefix: 'f', concurrency: 8 }, 600_000);
      const refused = joined.filter((a) => a.status !== 200);
      if (refused.length > 0) throw new Error(`${refused.length} PUT /peek on the fan-out room failed: ${refused[0]!.status} ${refused[0]!.text}`);

      log(`federation: ${samples} sequential PUT /peek on the room with ${stateEvents} state events`);
      const big = await peers.call<PeekAnswer[]>(
        'peek',
        { roomId: bigRoom, from: 0, to: Math.min(samples, peerCount), perPeer: Math.ceil(samples / peerCount), idPrefix: 'g', concurrency: 1 },
        600_000,
      );
      const bad = big.filter((a) => a.status !== 200);
      if (bad.length > 0) throw new Error(`PUT /peek on the big room failed: ${bad[0]!.status} ${bad[0]!.text}`);
      const putMs = big.map((a) => a.ms);

      log(`federation: ${fanout} events fanned out to ${peerCount} peeking servers`);
      await server.child.call('settle');
      await peers.call('expect', { count: fanout });
      const c0 = cpuSample();
      const t0 = process.hrtime.bigint();
      const w0 = Date.now();
      const sent = await server.child.call<{ appendedMs: number; projectedMs: number }>('sendEvents', { roomId: fanRoom, sender: creator, count: fanout, perCommand: 1 }, 900_000);
      await until('every peer has every event', async () => (await peers.call<{ reached: number }>('counts')).reached >= peerCount, 600_000, 20);
      const counts = await peers.call<{ txns: number; lastReachedAt: string }>('counts');
      const fanSeconds = Number(BigInt(counts.lastReachedAt) - t0) / 1e9;
      const cpu = cpuBetween(c0, cpuSample(), { peekd: server.child.pid, peers: peers.pid, bench: process.pid }, (Date.now() - w0) / 1000);
      const eventsPerSecond = fanout / fanSeconds;

      let fanProfile;
      let fanTrace: TraceLine[] | undefined;
      if (ctx.profile !== 'never') {
        // No goal on this row, but the closing note says where its time goes.
        await peers.call('expect', { count: 25 });
        await server.child.call('traceStart');
        const p = await profiled(server.child, profilePath('federation-fanout'), async () => {
          await server!.child.call('sendEvents', { roomId: fanRoom, sender: creator, count: 25, perCommand: 1 }, 900_000);
          await until('every peer has 25 more events', async () => (await peers.call<{ reached: number }>('counts')).reached >= peerCount, 600_000, 20);
        });
        fanTrace = await server.child.call<TraceLine[]>('traceStop');
        fanProfile = p.summary;
        notes.push(describeProfile(`federation fan-out to ${peerCount} peers (peekd process)`, p.summary));
        notes.push(describeTrace(`federation fan-out (peekd process, same window: 25 events to ${peerCount} peers)`, fanTrace, 25 * peerCount, 'PDU delivery', 14));
      }

      log('federation: signature verifications per second');
      load = await startLoadChild(services, 'federation');
      const v = await load.call<VerifyOut>('verifyBench', { durationMs: ctx.quick ? 500 : 1500 });
      const ratio = v.peekdPduVerifier.perSecond / v.nodeNative.perSecond;
      const met = ratio >= 0.8;
      let verifyProfile;
      if (profiles(ctx, !met)) {
        const p = await profiled(load, profilePath('federation-verify'), () => load!.call('verifyBench', { durationMs: 2000, only: 'peekdPduVerifier' }));
        verifyProfile = p.summary;
        notes.push(describeProfile('signature verification (verifier micro-benchmark process)', p.summary));
      }

      const rows: Row[] = [
        {
          scenario: 'federation',
          metric: `inbound PUT /peek, room with ${fmtNum(stateEvents)} state events, p50 / p99 ms (${fmtNum(big[0]!.bytes / 1024)} KiB answer)`,
          value: `${fmtNum(percentile(putMs, 50))} / ${fmtNum(percentile(putMs, 99))}`,
          ceiling: '—',
          goal: '—',
        },
        {
          scenario: 'federation',
          metric: `events/s fanned out to ${peerCount} peeking servers (PDU deliveries/s)`,
          value: `${fmtNum(eventsPerSecond)} (${fmtNum(eventsPerSecond * peerCount)})`,
          ceiling: '—',
          goal: '—',
        },
        {
          scenario: 'federation',
          metric: 'PDU signature verifications/s through peekd’s verifier (verifyPduSignature)',
          value: fmtNum(v.peekdPduVerifier.perSecond),
          ceiling: `node:crypto ${fmtNum(v.nodeNative.perSecond)}; tweetnacl ${fmtNum(v.tweetnacl.perSecond)}`,
          ratio: round(ratio, 3),
          goal: 'verifier ≥ 0.8 of native',
          met,
        },
        {
          scenario: 'federation',
          metric: 'X-Matrix request verifications/s (verifyRequestSignature)',
          value: fmtNum(v.peekdRequestVerifier.perSecond),
          ceiling: `node:crypto ${fmtNum(v.nodeNativeRequest.perSecond)}`,
          ratio: round(v.peekdRequestVerifier.perSecond / v.nodeNativeRequest.perSecond, 3),
          goal: '—',
        },
      ];
      notes.push(
        `federation fan-out: ${fanout} events appended in ${fmtNum(sent.appendedMs)} ms, all ${peerCount} peers had all of them after ${fmtNum(fanSeconds * 1000)} ms in ${counts.txns} transactions; CPU busy in cores: ${Object.entries(
          cpu,
        )
          .map(([k, x]) => `${k} ${x}`)
          .join(', ')}.`,
        `federation verify: peekd's Ed25519 wrapper alone (prepared bytes) ${fmtNum(v.peekdPrimitive.perSecond)}/s; checkPdu (content hash + signature + event ID, what /send runs per PDU) ${fmtNum(v.checkPduPerSecond)}/s; signed bytes ${v.messageBytes} B of a ${v.pduBytes} B PDU.`,
      );
      return {
        scenario: 'federation',
        rows,
        cores: coresReport(server.child.pid, peers.pid, { server: 'peekd', load: 'fake peers' }),
        details: {
          peerCount,
          stateEvents,
          putPeek: { ms: putMs, bytes: big[0]!.bytes, p50: percentile(putMs, 50), p99: percentile(putMs, 99) },
          fanout: { events: fanout, seconds: fanSeconds, eventsPerSecond, txns: counts.txns, sent, cpuCoresBusy: cpu },
          verify: v,
          fanProfile,
          fanTrace,
          verifyProfile,
        },
        notes,
      };
    } finally {
      await load?.stop();
      await server?.stop();
      await peers.stop();
    }
  },
};
