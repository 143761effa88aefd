import { describe, expect, it } from 'vitest';
import { PrefaultedArrays } from '../src/server/prefaulted-arrays.js';

const BIG = 1 << 20; // 4 MiB: prepared by the worker

function nextReady(arrays: PrefaultedArrays): Promise<void> {
  return new Promise((resolve) => {
    arrays.onReady = resolve;
  });
}

describe('memory made resident on a worker thread', () => {
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

  it('shares large grown arrays with the worker, which makes them resident ahead of the writer without changing a word', async () => {
    const arrays = new PrefaultedArrays();
    try {
      expect(arrays.allocate(1000)).toBeNull(); // small: the automaton allocates it
      const length = 4 * BIG; // 16 MiB: several strides ahead
      const grown = arrays.allocate(length)!;
      expect(grown.buffer).toBeInstanceOf(SharedArrayBuffer);
      expect(grown.length).toBe(length);
      for (let i = 0; i < length; i++) grown[i] = i ^ 0x5a5a; // what the automaton wrote meanwhile
      let at = 0;
      let asked = 0;
      while (at < length) {
        const next = arrays.ahead(grown, at);
        asked++;
        at = next === Number.POSITIVE_INFINITY ? length : next;
      }
      expect(asked).toBeGreaterThan(1);
      expect(arrays.aheadBytes).toBe(length * Int32Array.BYTES_PER_ELEMENT);
      // The worker handles messages in order: once an array asked for after the touches is here, they are done.
      const ready = nextReady(arrays);
      expect(arrays.take(BIG)).toBeNull();
      await ready;
      let changed = 0;
      for (let i = 0; i < length; i++) if (grown[i] !== (i ^ 0x5a5a)) changed++;
      expect(changed).toBe(0);
      arrays.release(grown);
      expect(arrays.ahead(grown, 0)).toBe(Number.POSITIVE_INFINITY); // forgotten
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
    expect(arrays.allocate(BIG)).toBeNull(); // grown arrays too: the automaton's own
  });
});
