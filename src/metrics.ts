// Prometheus metrics: one registry for the whole process, and the metrics peekd's parts
// report to. A part imports the metric it updates from here; the HTTP layer serves
// `metricsRegistry.metrics()`. Names follow Prometheus conventions (peekd_ prefix, _total
// for counters); labels stay low-cardinality (a projection name, never a room or user).
import { Counter, Registry } from 'prom-client';

export const metricsRegistry = new Registry();

/** Log messages a projection could not decode and recorded in `projection_quarantine`. */
export const projectionQuarantinedTotal = new Counter({
  name: 'peekd_projection_quarantined_total',
  help: 'Log messages a projection could not decode and passed over, recorded in projection_quarantine',
  labelNames: ['projection'] as const,
  registers: [metricsRegistry],
});
