/**
 * The memory watch: garbage the core's eviction leaves behind is collected when RSS passes what
 * the budgets allow, not whenever V8's heuristics get to it; and a limit RSS cannot be brought
 * back under is not collected for on every check.
 */
import { describe, expect, it } from 'vitest';
import { MemoryWatch } from '../src/server/memory-watch.js';

describe('memory watch', () => {
  it('starts a collection only while RSS is above the limit', () => {
    let rss = 100;
    const collections: unknown[] = [];
    const watch = new MemoryWatch(() => 200, () => rss, (options) => collections.push(options));
    expect(watch.check()).toBe(false);
    rss = 250;
    expect(watch.check()).toBe(true);
    expect(collections).toEqual([{ type: 'major', execution: 'async' }]);
    rss = 150;
    expect(watch.check()).toBe(false);
    expect(watch.collections).toBe(1);
  });

  it('waits twice as many checks each time a collection leaves RSS above the limit, and starts over once it is below', () => {
    let rss = 300;
    const watch = new MemoryWatch(() => 200, () => rss, () => undefined);
    const pattern = Array.from({ length: 16 }, () => (watch.check() ? 'C' : '.')).join('');
    expect(pattern).toBe('CC.C..C....C....');
    rss = 100;
    watch.check();
    rss = 300;
    expect([watch.check(), watch.check()]).toEqual([true, true]);
  });

  it('follows a limit that moves (frames being received count)', () => {
    let limit = 200;
    const watch = new MemoryWatch(() => limit, () => 250, () => undefined);
    limit = 300;
    expect(watch.check()).toBe(false);
    limit = 200;
    expect(watch.check()).toBe(true);
  });

  it('gets a collector from the running Node without --expose-gc, and leaves gc() out of the global scope', () => {
    const watch = new MemoryWatch(() => 0);
    expect(watch.canCollect).toBe(true);
    expect(watch.check()).toBe(true);
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
  });
});
