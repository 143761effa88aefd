/**
 * Keeps the event loop polling, instead of sleeping in epoll, for a window. A process that slept
 * wakes slowly (tens of microseconds on a VM, for the vCPU alone) and on a core whose caches have
 * gone cold: the step then costs two to three times what it costs warm (docs/results.md).
 * Polling trades a busy core for that, so windows are short or asked for: after each step only
 * when configured (busyPollUs), and after a PING, which the shim sends as it starts building a
 * step (wakePollUs), until that step has been answered.
 */
export class BusyPoll {
  private untilMs = 0;
  private polling = false;

  /** Polls from now for `windowUs`, replacing the current window (0 ends it). */
  restart(windowUs: number): void {
    this.untilMs = windowUs > 0 ? performance.now() + windowUs / 1000 : 0;
    if (windowUs > 0) this.start();
  }

  /** Polls for at least `windowUs` from now (a longer current window is kept). */
  extend(windowUs: number): void {
    if (windowUs <= 0) return;
    this.untilMs = Math.max(this.untilMs, performance.now() + windowUs / 1000);
    this.start();
  }

  /** Whether the loop is polling now. */
  get active(): boolean {
    return this.polling;
  }

  /** Ends the current window (shutdown). */
  stop(): void {
    this.untilMs = 0;
  }

  private start(): void {
    if (this.polling) return;
    this.polling = true;
    setImmediate(this.poll);
  }

  // Each pending immediate makes libuv poll for I/O with a zero timeout, so socket data that
  // arrives during the window is read at once by a thread that never left the core.
  private readonly poll = (): void => {
    if (performance.now() < this.untilMs) setImmediate(this.poll);
    else this.polling = false;
  };
}
