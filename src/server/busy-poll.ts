/**
 * Keeps the event loop polling, instead of sleeping in epoll, for a window after each step. The
 * next step of a decode loop comes a few hundred microseconds later; a process that slept in the
 * meantime wakes on a core whose caches have gone cold, and the step then costs two to three
 * times what it costs warm (docs/results.md). Polling trades one busy core for that. Off by
 * default: it pays only where the node has a core to spare for the sidecar.
 */
export class BusyPoll {
  private untilMs = 0;
  private polling = false;

  constructor(private readonly windowUs: number) {}

  /** Polls for the next `windowUs` (from now). */
  extend(): void {
    if (this.windowUs <= 0) return;
    this.untilMs = performance.now() + this.windowUs / 1000;
    if (!this.polling) {
      this.polling = true;
      setImmediate(this.poll);
    }
  }

  /** Whether the loop is polling now. */
  get active(): boolean {
    return this.polling;
  }

  /** Ends the current window (shutdown). */
  stop(): void {
    this.untilMs = 0;
  }

  // Each pending immediate makes libuv poll for I/O with a zero timeout, so socket data that
  // arrives during the window is read at once by a thread that never left the core.
  private readonly poll = (): void => {
    if (performance.now() < this.untilMs) setImmediate(this.poll);
    else this.polling = false;
  };
}
