import { describe, expect, it } from 'vitest';
import { PrefaultedArrays } from '../src/server/prefaulted-arrays.js';

const BIG = 1 << 20; // 4 MiB: prepared by the worker

function nextReady(arrays: PrefaultedArrays): Promise<void> {
  return new Promise((resolve) => {
    arrays.onReady = resolve;
  });
}

describe('compaction arrays prepared on a worker thread', () => {
  it('answers a large array not yet, then the same length once the worker has made it ready', async () => {
    const arrays = new PrefaultedArrays();
    try {
      const ready = nextReady(arrays);
      expect(arrays.take(BIG)).toBeNull();
      expect(arrays.awaiting).toBe(true);
      expect(arrays.take(BIG)).toBeNull(); // asked again meanwhile: still the one being made
      await ready;
      expect(arrays.awaiting).toBe(false);
      const array = arrays.take(BIG);
      expect(array).toBeInstanceOf(Int32Array);
      expect(array?.length).toBe(BIG);
      array?.fill(3); // the caller's own, writable
      expect(array?.[BIG - 1]).toBe(3);
      expect(arrays.problem).toBeNull();
    } finally {
      await arrays.close();
    }
  });

  it('drops an array no longer wanted when another length is asked for, and hands over only what was asked last', async () => {
    const arrays = new PrefaultedArrays();
    try {
      expect(arrays.take(BIG)).toBeNull();
      const ready = nextReady(arrays);
      expect(arrays.take(BIG + 1)).toBeNull(); // the first compaction was abandoned
      await ready;
      expect(arrays.take(BIG)).toBeNull(); // not kept: asks the worker again
      const again = nextReady(arrays);
      await again;
      expect(arrays.take(BIG)?.length).toBe(BIG);
    } finally {
      await arrays.close();
    }
  });

  it('allocates small arrays on the spot, and every array once the worker is gone', async () => {
    const arrays = new PrefaultedArrays();
    expect(arrays.take(1000)?.length).toBe(1000);
    await arrays.close();
    expect(arrays.take(BIG)?.length).toBe(BIG);
    expect(arrays.awaiting).toBe(false);
  });
});
