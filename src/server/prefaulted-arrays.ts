/**
 * Arrays for compaction, allocated and touched on a worker thread, so the event loop never pays
 * for fresh memory. On the test VM a first touch cost about 3 ms per MB (a 2 MB huge page at a
 * time with huge pages: 4 to 5 ms), and allocating a group's 20 MB array took up to 7 ms: a
 * compaction slice that met either held the next step for that long. A prefaulted array arrives
 * resident (an ArrayBuffer transferred, not copied), and a slice's copy into it takes about 0.01 ms.
 */
import { Worker } from 'node:worker_threads';
import { type ArraySupply, uninitializedInt32 } from '../core/typed.js';

/** Below this an array is allocated on the spot: a slice copies about as much anyway. */
const PREFAULT_FROM_BYTES = 256 * 1024;

/**
 * The worker: allocates what it is asked for, writes one word per 4 KiB page (a write faults the
 * page in; a read would map the shared zero page), and hands the buffer over. Inline source, so
 * it runs the same from the sources (tests) and from the build.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
// The lowest priority, for this thread only (Linux's nice value is per thread): its page faults
// give way to the event loop and to the engine's processes on the same cores.
try { require('node:os').setPriority(19); } catch {}
parentPort.on('message', (bytes) => {
  const buffer = new ArrayBuffer(bytes);
  const words = new Int32Array(buffer);
  for (let i = 0; i < words.length; i += 1024) words[i] = 0;
  parentPort.postMessage(buffer, [buffer]);
});
`;

export class PrefaultedArrays implements ArraySupply {
  /** Called when an array asked for is ready, or when the worker is gone: compaction can go on. */
  onReady: () => void = () => {};
  /** Arrays the worker prepared that a compaction took. */
  handedOver = 0;
  /** Why arrays are allocated on the spot now (the worker failed), or null. */
  problem: string | null = null;
  private readonly worker: Worker | null;
  /** Length (elements) of the array being prepared, or null. */
  private pending: number | null = null;
  private ready: Int32Array | null = null;

  constructor() {
    let worker: Worker | null = null;
    try {
      worker = new Worker(WORKER_SOURCE, { eval: true, name: 'sam-sidecar prefault' });
    } catch (error) {
      this.problem = `prefault worker did not start: ${(error as Error).message}`;
    }
    this.worker = worker;
    if (worker === null) return;
    worker.unref(); // idle between compactions; never what keeps the process alive
    worker.on('message', (buffer: ArrayBuffer) => {
      const array = new Int32Array(buffer);
      if (this.pending !== array.length) return; // asked for something else since: dropped
      this.pending = null;
      this.ready = array;
      this.onReady();
    });
    const fail = (why: string): void => {
      if (this.problem !== null) return;
      this.problem = why;
      this.pending = null;
      this.ready = null;
      this.onReady();
    };
    worker.on('error', (error) => fail(`prefault worker failed: ${error.message}`));
    worker.on('exit', (code) => fail(`prefault worker exited (code ${code})`));
  }

  get awaiting(): boolean {
    return this.pending !== null;
  }

  take(length: number): Int32Array | null {
    if (this.problem !== null || this.worker === null || length * Int32Array.BYTES_PER_ELEMENT < PREFAULT_FROM_BYTES) return uninitializedInt32(length);
    const ready = this.ready;
    if (ready !== null && ready.length === length) {
      this.ready = null;
      this.handedOver++;
      return ready;
    }
    if (this.pending === length) return null;
    // A different length: the compaction that asked before was abandoned (its group rejoined).
    // At most one array is held or being made, so this holds at most two group arrays' worth.
    this.ready = null;
    this.pending = length;
    this.worker.postMessage(length * Int32Array.BYTES_PER_ELEMENT);
    return null;
  }

  /** Stops the worker (at shutdown); later arrays are allocated on the spot. */
  async close(): Promise<void> {
    this.problem ??= 'closed';
    await this.worker?.terminate();
  }
}
