// What every scenario gets and gives back.
import type { ScenarioResult, Services } from './harness.ts';

export interface BenchContext {
  services: Services;
  /** --quick: every size scaled down (a smoke run, not the numbers to publish). */
  quick: boolean;
  /** When to profile peekd: where a goal is missed (the default), always (--profile) or never (--no-profile). */
  profile: 'missed' | 'always' | 'never';
}

/** Whether a scenario profiles peekd, given whether its goal was missed. */
export function profiles(ctx: BenchContext, missed: boolean): boolean {
  return ctx.profile === 'always' || (ctx.profile === 'missed' && missed);
}

export interface Scenario {
  name: string;
  summary: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
