// Session-end hooks: each store registers its reset so logout leaves nothing behind.
const resets: (() => void)[] = [];

export function onSessionEnd(fn: () => void): void {
  resets.push(fn);
}

export function endSession(): void {
  for (const fn of resets) {
    try {
      fn();
    } catch {
      /* keep resetting the others */
    }
  }
}
