// Handlers every bench child answers: CPU profiles of a time window, heap after GC, exit.
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import type { Handler } from './ipc.ts';

let session: Session | undefined;

export async function heapAfterGc(): Promise<NodeJS.MemoryUsage> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    // Several passes, with turns of the event loop between, so weak and finalised
    // objects are really gone before we read the heap.
    for (let i = 0; i < 4; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
  }
  return process.memoryUsage();
}

export function commonHandlers(onExit: () => Promise<void> = async () => {}): Record<string, Handler> {
  return {
    /** Starts V8's sampling CPU profiler (what `node --cpu-prof` uses) on this process. */
    profileStart: async ({ intervalUs = 500 }: { intervalUs?: number }) => {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: intervalUs });
      await session.post('Profiler.start');
      return true;
    },
    /** Stops the profiler and writes the .cpuprofile (Chrome DevTools format) to `file`. */
    profileStop: async ({ file }: { file: string }) => {
      if (!session) throw new Error('no profile running');
      const { profile } = await session.post('Profiler.stop');
      await session.post('Profiler.disable');
      session.disconnect();
      session = undefined;
      writeFileSync(file, JSON.stringify(profile));
      return file;
    },
    heap: () => heapAfterGc(),
    exit: async () => {
      setTimeout(() => process.exit(1), 20_000).unref();
      try {
        await onExit();
      } finally {
        setImmediate(() => process.exit(0));
      }
      return true;
    },
  };
}

/** Runs `fn` for up to `n` items with at most `concurrency` in flight. */
export async function pool<T, R>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}

/** Monotonic time in ns as a string (process.hrtime is CLOCK_MONOTONIC: comparable across processes). */
export function nowNs(): string {
  return process.hrtime.bigint().toString();
}
