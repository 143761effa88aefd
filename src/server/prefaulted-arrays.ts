/**
 * Memory made resident on a worker thread, so the event loop does not pay for fresh pages. On the
 * test VM a first touch cost about 3 ms per MB (a 2 MB huge page at a time with huge pages: 4 to
 * 5 ms), and allocating a group's 20 MB array took up to 7 ms.
 * - Compaction (ArraySupply): the worker allocates and touches the shrunk array and transfers it
 *   (moved, not copied); a slice's copy into it takes about 0.01 ms instead of 0.4 ms.
 * - Growth (GrowthMemory): a group's or the corpus's large array is a SharedArrayBuffer, and the
 *   worker touches its pages a little ahead of where the automaton writes. At 128 x 200k tokens
 *   the event loop had spent 3 of its 10 s of CPU in the kernel on those first writes.
 * The worker touches with an atomic add of zero, which cannot change what the event loop wrote.
 */
import { Worker } from 'node:worker_threads';
import { type ArraySupply, type GrowthMemory } from '../core/typed.js';

/** Below this an array is allocated on the spot: a slice copies about as much anyway. */
const PREFAULT_FROM_BYTES = 256 * 1024;
/** Grown arrays from this size are shared with the worker. */
const SHARED_FROM_BYTES = 4 * 1024 * 1024;
/** How far ahead of the writer the worker keeps pages resident (elements; 2 MiB, one huge page). */
const AHEAD_ELEMENTS = 1 << 19;

/**
 * The worker. A number: allocate that many bytes, write one word per 4 KiB page (a write faults
 * the page in; a read would map the shared zero page), hand the buffer over. { share, id }: a
 * grown array's memory; { touch, from, to }: make its elements [from, to) resident; { release }:
 * forget it (collected at once: the worker's view is all that keeps shared memory alive on its
 * side). Inline source, so it runs the same from the sources (tests) and from the build.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
// The lowest priority, for this thread only (Linux's nice value is per thread): its page faults
// give way to the event loop and to the engine's processes on the same cores.
try { require('node:os').setPriority(19); } catch {}
// gc() for this thread, as memory-watch.ts takes it for the main one (which did so at load, before
// this worker existed); tried again if another worker turned the process-wide flag off meanwhile.
let collect = null;
for (let tries = 0; tries < 3 && typeof collect !== 'function'; tries++) {
  try {
    require('node:v8').setFlagsFromString('--expose-gc');
    collect = require('node:vm').runInNewContext('typeof gc === "function" ? gc : null');
  } catch {} finally {
    require('node:v8').setFlagsFromString('--no-expose-gc');
  }
}
const shared = new Map();
let collecting = false;
parentPort.on('message', (message) => {
  if (typeof message === 'number') {
    const buffer = new ArrayBuffer(message);
    const words = new Int32Array(buffer);
    for (let i = 0; i < words.length; i += 1024) words[i] = 0;
    parentPort.postMessage(buffer, [buffer]);
  } else if (message.share !== undefined) {
    shared.set(message.id, new Int32Array(message.share));
  } else if (message.touch !== undefined) {
    const words = shared.get(message.touch);
    if (words === undefined) return;
    const to = Math.min(message.to, words.length);
    for (let i = Math.ceil(message.from / 1024) * 1024; i < to; i += 1024) Atomics.add(words, i, 0);
  } else if (message.release !== undefined) {
    shared.delete(message.release);
    if (collect !== null && !collecting) {
      collecting = true;
      setImmediate(() => { collecting = false; collect(); });
    }
  }
});
`;

export class PrefaultedArrays implements ArraySupply, GrowthMemory {
  /** Called when an array asked for is ready, or when the worker is gone: compaction can go on. */
  onReady: () => void = () => {};
  /** Arrays the worker prepared that a compaction took. */
  handedOver = 0;
  /** Bytes of grown arrays the worker was asked to make resident ahead of the writer. */
  aheadBytes = 0;
  /** Grown arrays shared with the worker: their id there, and how far it was asked to touch. */
  private readonly shared = new WeakMap<Int32Array, { id: number; requested: number }>();
  private nextId = 1;
  /** A shared array collected here without release() (its automaton was dropped): forgotten there too. */
  private readonly forget = new FinalizationRegistry<number>((id) => {
    if (this.problem === null) this.worker?.postMessage({ release: id });
  });
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
    if (this.problem !== null || this.worker === null || length * Int32Array.BYTES_PER_ELEMENT < PREFAULT_FROM_BYTES) return new Int32Array(length);
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

  allocate(length: number): Int32Array | null {
    if (this.problem !== null || this.worker === null || length * Int32Array.BYTES_PER_ELEMENT < SHARED_FROM_BYTES) return null;
    const array = new Int32Array(new SharedArrayBuffer(length * Int32Array.BYTES_PER_ELEMENT));
    const id = this.nextId++;
    this.shared.set(array, { id, requested: 0 });
    this.forget.register(array, id, array);
    this.worker.postMessage({ share: array.buffer, id });
    return array;
  }

  ahead(array: Int32Array, written: number): number {
    const entry = this.shared.get(array);
    if (entry === undefined || this.problem !== null) return Number.POSITIVE_INFINITY;
    const to = Math.min(array.length, written + 2 * AHEAD_ELEMENTS);
    if (to > entry.requested) {
      const from = Math.max(entry.requested, written);
      this.worker?.postMessage({ touch: entry.id, from, to });
      this.aheadBytes += (to - from) * Int32Array.BYTES_PER_ELEMENT;
      entry.requested = to;
    }
    return to >= array.length ? Number.POSITIVE_INFINITY : written + AHEAD_ELEMENTS;
  }

  release(array: Int32Array): void {
    const entry = this.shared.get(array);
    if (entry === undefined) return;
    this.shared.delete(array);
    this.forget.unregister(array);
    if (this.problem === null) this.worker?.postMessage({ release: entry.id });
  }

  /** Stops the worker (at shutdown); later arrays are allocated on the spot. */
  async close(): Promise<void> {
    this.problem ??= 'closed';
    await this.worker?.terminate();
  }
}
