/**
 * Keeps the process's resident memory within what its budgets allow. The core counts what it
 * holds (memory.maxBytes) and evicts before that is exceeded, but what it evicts becomes garbage
 * that V8 collects when its own heuristics say so. Under churn (requests, groups and engines
 * created and evicted by the hundred thousand) the old generation grows to several times what is
 * alive before a full collection, and RSS passes the budget with it, though nothing alive does.
 * When RSS is above its limit the watch starts an incremental major collection: V8 marks in
 * short slices between turns of the event loop, so no call waits on one long pause.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

type Collect = (options: { type: 'major'; execution: 'async' }) => void;

/**
 * V8's gc() without starting Node with --expose-gc: the flag is read when a context is created,
 * so a new context gets the function, and the flag is turned off again for everything else.
 * Null where the runtime refuses (then the watch only reports).
 */
function collector(): Collect | null {
  try {
    v8.setFlagsFromString('--expose-gc');
    const collect: unknown = vm.runInNewContext('gc');
    return typeof collect === 'function' ? (collect as Collect) : null;
  } catch {
    return null;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
}

/**
 * Taken once, when this module loads: V8's flags are the process's, and a worker thread that
 * toggles --expose-gc for itself later (prefaulted-arrays.ts) could otherwise turn it off between
 * the two calls above, leaving the watch without a collector.
 */
const PROCESS_COLLECTOR = collector();

/** While collections do not bring RSS back within the limit, checks skipped between them double up to this. */
const MAX_SKIPPED_CHECKS = 64;

export class MemoryWatch {
  /** Collections started because RSS was above the limit. */
  collections = 0;
  private readonly collect: Collect | null;
  /** Memory the runtime keeps after a collection is not garbage: collecting again and again would only cost CPU. */
  private backoff = 0;
  private wait = 0;

  constructor(
    /** RSS the process should stay within now: the runtime's own, the byte budget, the frames buffered. */
    private readonly limitBytes: () => number,
    private readonly rss: () => number = () => process.memoryUsage.rss(),
    collect: Collect | null = PROCESS_COLLECTOR,
  ) {
    this.collect = collect;
  }

  get canCollect(): boolean {
    return this.collect !== null;
  }

  /** Called on the maintenance timer, after the core's own eviction; true if it started a collection. */
  check(): boolean {
    if (this.collect === null) return false;
    if (this.rss() <= this.limitBytes()) {
      this.backoff = 0;
      this.wait = 0;
      return false;
    }
    if (this.wait > 0) {
      this.wait--;
      return false;
    }
    this.collect({ type: 'major', execution: 'async' });
    this.collections++;
    // Each collection after which RSS stays above the limit makes the next wait longer.
    this.wait = this.backoff;
    this.backoff = Math.min(MAX_SKIPPED_CHECKS, Math.max(1, this.backoff * 2));
    return true;
  }
}
