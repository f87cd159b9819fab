// Prometheus metrics: one registry for the whole process, and the metrics peekd's parts
// report to. A part imports the metric it updates from here; gauges that describe the
// state of a running peekd (positions, live peeks, actors, leases) are read when
// /metrics is scraped (src/observe.ts). Names follow Prometheus conventions (peekd_
// prefix, _total for counters, base units); labels stay low-cardinality: a command type,
// a stream, a projection, a route pattern — never a room or a user — and a federation
// destination only through `boundedLabel`.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

const registers = [metricsRegistry];
/** Seconds, from a quarter of a millisecond to ten seconds. */
const LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// --- commands and the log ---------------------------------------------------------------

export const commandsTotal = new Counter({
  name: 'peekd_commands_total',
  help: 'Commands a room actor of this process ran, by type and outcome (ok, rejected: refused by the room; unavailable: NATS or a conflict storm, retried by the client; error)',
  labelNames: ['type', 'outcome'] as const,
  registers,
});

export const commandDurationSeconds = new Histogram({
  name: 'peekd_command_duration_seconds',
  help: 'Time a room actor took to run a command, queueing in its mailbox included',
  labelNames: ['type'] as const,
  buckets: LATENCY_BUCKETS,
  registers,
});

export const appendDurationSeconds = new Histogram({
  name: 'peekd_append_duration_seconds',
  help: 'Time an append with an expected last subject sequence took on JetStream',
  labelNames: ['stream'] as const,
  buckets: LATENCY_BUCKETS,
  registers,
});

export const appendConflictsTotal = new Counter({
  name: 'peekd_append_conflicts_total',
  help: 'Appends JetStream refused because another writer had appended to the room first (the actor reloads and decides again)',
  labelNames: ['stream'] as const,
  registers,
});

// --- projections ------------------------------------------------------------------------

export const projectionPosition = new Gauge({
  name: 'peekd_projection_position',
  help: 'Stream sequence of the last log message each projection has committed',
  labelNames: ['projection'] as const,
  registers,
});

export const streamHead = new Gauge({
  name: 'peekd_stream_head',
  help: 'Last sequence of each stream',
  labelNames: ['stream'] as const,
  registers,
});

export const projectionLag = new Gauge({
  name: 'peekd_projection_lag',
  help: 'Log messages each projection is behind the head of its stream',
  labelNames: ['projection'] as const,
  registers,
});

/** Log messages a projection could not decode and recorded in `projection_quarantine`. */
export const projectionQuarantinedTotal = new Counter({
  name: 'peekd_projection_quarantined_total',
  help: 'Log messages a projection could not decode and passed over, recorded in projection_quarantine',
  labelNames: ['projection'] as const,
  registers,
});

// --- peeks, actors, sync -----------------------------------------------------------------

export const livePeeks = new Gauge({
  name: 'peekd_live_peeks',
  help: 'Live peeks by kind: device (MSC2753), inbound (remote servers peeking rooms here), outbound (this server peeking remote rooms)',
  labelNames: ['kind'] as const,
  registers,
});

export const roomActors = new Gauge({
  name: 'peekd_room_actors',
  help: 'Room actors in memory in this process',
  registers,
});

export const syncWaiters = new Gauge({
  name: 'peekd_sync_waiters',
  help: 'Long-polling /sync requests waiting for something new',
  registers,
});

export const syncWakeupSeconds = new Histogram({
  name: 'peekd_sync_wakeup_seconds',
  help: "From a projection batch's commit waking a long-poll to that /sync's answer",
  buckets: LATENCY_BUCKETS,
  registers,
});

// --- federation ---------------------------------------------------------------------------

export const federationQueueDepth = new Gauge({
  name: 'peekd_federation_queue_depth',
  help: 'Items waiting to go to each destination: the pending transaction and outbox entries (peek DELETEs, EDUs)',
  labelNames: ['destination'] as const,
  registers,
});

export const federationRetriesTotal = new Counter({
  name: 'peekd_federation_retries_total',
  help: 'Deliveries to a destination tried again after a failure',
  labelNames: ['destination'] as const,
  registers,
});

export const federationFailuresTotal = new Counter({
  name: 'peekd_federation_failures_total',
  help: 'Failed deliveries to a destination (unreachable, or an answer other than 200)',
  labelNames: ['destination'] as const,
  registers,
});

// --- cluster and process --------------------------------------------------------------------

export const shardLeasesHeld = new Gauge({
  name: 'peekd_shard_leases_held',
  help: 'Shard leases this process holds (roles split; all in one process holds every shard without leases)',
  registers,
});

export const jobLeasesHeld = new Gauge({
  name: 'peekd_job_leases_held',
  help: 'Job leases (projections, federation sender, outbound upkeep) this process holds with roles split',
  registers,
});

export const readyGauge = new Gauge({
  name: 'peekd_ready',
  help: '1 when GET /ready answers 200, else 0',
  registers,
});

export const httpRequestsTotal = new Counter({
  name: 'peekd_http_requests_total',
  help: 'HTTP requests answered, by method, route pattern and status',
  labelNames: ['method', 'route', 'status'] as const,
  registers,
});

export const httpRequestDurationSeconds = new Histogram({
  name: 'peekd_http_request_duration_seconds',
  help: 'Time to answer an HTTP request, by method and route pattern (long-polls included)',
  labelNames: ['method', 'route'] as const,
  buckets: [...LATENCY_BUCKETS, 30, 60],
  registers,
});

/** Distinct values a label that comes from the outside world (a server name) may take. */
export const MAX_LABEL_VALUES = 100;
const seenLabels = new Map<string, Set<string>>();

/**
 * `value` while fewer than MAX_LABEL_VALUES distinct values of `label` were seen (or it
 * is one of them), else `_other`: a peer cannot grow the metrics without bound.
 */
export function boundedLabel(label: string, value: string): string {
  let seen = seenLabels.get(label);
  if (!seen) seenLabels.set(label, (seen = new Set()));
  if (seen.has(value)) return value;
  if (seen.size >= MAX_LABEL_VALUES) return '_other';
  seen.add(value);
  return value;
}
