// A graceful shutdown in a fixed order of phases, whatever order the parts were started
// in: first HTTP (readiness already down: stop accepting connections, answer open
// long-polls, finish requests), then the work that issues commands, then the room
// actors' mailboxes, then the projections (the batch in flight commits), then leases (a
// room host hands its shards over only once it appends no more), and last the
// connections (NATS drained, Postgres closed, an embedded nats-server stopped). Within a
// phase, steps run in the reverse of the order they were added.
import type { Logger } from './logger.ts';

export const SHUTDOWN_PHASES = ['http', 'work', 'mailboxes', 'projections', 'leases', 'connections'] as const;
export type ShutdownPhase = (typeof SHUTDOWN_PHASES)[number];

interface Step {
  phase: ShutdownPhase;
  name: string;
  run(): Promise<unknown>;
}

export class Shutdown {
  private readonly steps: Step[] = [];
  private closing?: Promise<void>;
  private current?: string;

  constructor(private readonly logger: Logger) {}

  add(phase: ShutdownPhase, name: string, run: () => Promise<unknown>): void {
    this.steps.push({ phase, name, run });
  }

  /** The step running now, for a shutdown that ran past its deadline. */
  get running(): string | undefined {
    return this.current;
  }

  /** Runs every step once, in phase order; a failing step is logged and the rest still run. */
  close(): Promise<void> {
    this.closing ??= this.run();
    return this.closing;
  }

  private async run(): Promise<void> {
    for (const phase of SHUTDOWN_PHASES) {
      const steps = this.steps.filter((s) => s.phase === phase).reverse();
      if (steps.length > 0) this.logger.info({ phase, steps: steps.map((s) => s.name) }, `shutdown: ${phase}`);
      for (const step of steps) {
        this.current = `${phase}: ${step.name}`;
        this.logger.debug({ phase, step: step.name }, 'shutdown step');
        try {
          await step.run();
        } catch (err) {
          this.logger.warn({ err, phase, step: step.name }, 'shutdown step failed');
        }
      }
    }
    this.current = undefined;
  }
}
