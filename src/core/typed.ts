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

/** Power-of-two capacity (hash tables mask with it) holding at least `needed`, doubling. */
export function grownPowerOfTwo(current: number, needed: number): number {
  let capacity = Math.max(current, 16);
  while (capacity < needed) capacity *= 2;
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
 * An Int32Array whose elements are not zeroed, for a caller that writes every one before reading
 * any. Zeroing reused heap memory costs milliseconds per tens of megabytes; this is malloc, not calloc.
 */
export function uninitializedInt32(length: number): Int32Array {
  const bytes = Buffer.allocUnsafeSlow(length * Int32Array.BYTES_PER_ELEMENT);
  return new Int32Array(bytes.buffer, bytes.byteOffset, length);
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

/** Arrays allocated on the spot, from the process's heap. */
export const HEAP_ARRAYS: ArraySupply = Object.freeze({ take: uninitializedInt32, awaiting: false });
