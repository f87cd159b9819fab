// What every scenario gets and gives back.
import type { ScenarioResult, Services } from './harness.ts';

export interface BenchContext {
  services: Services;
  /** --quick: every size scaled down (a smoke run, not the numbers to publish). */
  quick: boolean;
  /** Profile peekd when a goal is missed (default on; --no-profile turns it off). */
  profile: boolean;
}

export interface Scenario {
  name: string;
  summary: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
