// One wait for a projection position: a waiter that whoever sees the position reached
// resolves, and that removes itself and rejects (with a retryable error) after a timeout.

/**
 * Registers the waiter `make` builds (with `add`) and resolves when its `resolve` is called;
 * after `timeoutMs` it is removed (with `remove`) and the wait rejects with `timeoutError()`.
 */
export function waitWithTimeout<W>(make: (resolve: () => void) => W, add: (waiter: W) => void, remove: (waiter: W) => void, timeoutMs: number, timeoutError: () => Error): Promise<void> {
  return new Promise((resolve, reject) => {
    const waiter = make(() => {
      clearTimeout(timer);
      resolve();
    });
    const timer = setTimeout(
      () => {
        remove(waiter);
        reject(timeoutError());
      },
      Math.max(0, timeoutMs),
    );
    add(waiter);
  });
}
