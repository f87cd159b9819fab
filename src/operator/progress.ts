// Progress for long operator commands: a bar with events/s and ETA on a terminal, plain
// lines (at most every 2 s) otherwise, so logs and CI output stay readable.
import cliProgress from 'cli-progress';

export interface ProgressReporter {
  update(done: number, total: number): void;
  stop(): void;
}

export function progressReporter(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  const started = Date.now();
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% | {value}/{total} events | {rate} ev/s | ETA {eta_formatted}`, stream, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let begun = false;
    return {
      update(done, total) {
        const rate = Math.round(done / Math.max(0.001, (Date.now() - started) / 1000));
        if (!begun) {
          bar.start(Math.max(total, 1), done, { rate });
          begun = true;
        }
        bar.setTotal(Math.max(total, 1));
        bar.update(done, { rate });
      },
      stop: () => bar.stop(),
    };
  }
  // The last update not printed yet (rate-limited), so that `stop` can print where it ended.
  let last = 0;
  let unprinted: [number, number] | undefined;
  const print = (done: number, total: number, now: number) => {
    last = now;
    unprinted = undefined;
    const secs = Math.max(0.001, (now - started) / 1000);
    const rate = done / secs;
    const eta = rate > 0 ? Math.max(0, (total - done) / rate) : 0;
    stream.write(`${label}: ${done}/${total} events, ${Math.round(rate)} ev/s, ETA ${Math.round(eta)} s\n`);
  };
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < 2000 && done < total) {
        unprinted = [done, total];
        return;
      }
      print(done, total, now);
    },
    stop() {
      if (unprinted) print(unprinted[0], unprinted[1], Date.now());
    },
  };
}
