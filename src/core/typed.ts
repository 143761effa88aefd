/** Growable typed-array storage helpers shared by the core's data structures. */

export type IntArray = Int32Array | Uint32Array;

/**
 * Capacity after growing `current` so that it holds at least `needed` elements. Grows by 1.5x:
 * memory per token is a budget here, and the copy cost stays amortized O(1).
 */
export function grownCapacity(current: number, needed: number): number {
  let capacity = Math.max(current, 16);
  while (capacity < needed) capacity = Math.ceil(capacity * 1.5);
  return capacity;
}

/** A copy of `source` with `capacity` elements; new slots hold `fill`. */
export function resizedInt32(source: Int32Array, capacity: number, fill = 0): Int32Array {
  const next = new Int32Array(capacity);
  next.set(capacity >= source.length ? source : source.subarray(0, capacity));
  if (fill !== 0 && capacity > source.length) next.fill(fill, source.length);
  return next;
}

/**
 * Where a compaction gets the arrays it copies into. `take` answers an array of exactly `length`
 * elements, whose contents the caller overwrites before reading, or null while one is being made
 * ready (ask again later; `awaiting` stays true until it is). An adapter can prepare them off the
 * event loop: on a slow VM the first touch of fresh pages cost 3 ms per MB.
 */
export interface ArraySupply {
  take(length: number): Int32Array | null;
  readonly awaiting: boolean;
}

/**
 * Memory for an automaton's large growing arrays (states, edges), which an adapter can make
 * resident ahead of the writer off the event loop: at 128 x 200k tokens the event loop spent
 * 3 of its 10 s of CPU in the kernel, faulting in the pages its appends wrote first.
 */
export interface GrowthMemory {
  /** A zeroed array of `length` elements, or null (then the automaton allocates one itself). */
  allocate(length: number): Int32Array | null;
  /**
   * The automaton writes `array` at `written` now: memory just beyond may be made resident.
   * Returns the element at which to call again (Infinity: not again for this array, as for any
   * array this memory did not allocate).
   */
  ahead(array: Int32Array, written: number): number;
  /** `array` was replaced (grown or compacted): nothing more to do for it (any array; others are ignored). */
  release(array: Int32Array): void;
}

/** Arrays allocated on the spot, from the process's heap. */
export const HEAP_ARRAYS: ArraySupply = Object.freeze({ take: (length: number) => new Int32Array(length), awaiting: false });
