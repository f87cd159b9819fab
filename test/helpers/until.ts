/** Polls `check` until it holds, or throws "timed out waiting for <what>" after `withinMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, withinMs = 10_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
