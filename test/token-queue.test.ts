import { describe, expect, it } from 'vitest';
import { TokenQueue } from '../src/core/token-queue.js';

describe('the token queue of a backlog', () => {
  it('keeps long spans as views of the array they came in, copies short ones, and gives them back in order', () => {
    const frame = Uint32Array.from({ length: 3000 }, (_, i) => i);
    const queue = new TokenQueue();
    queue.push(frame, 0, 2000); // long: a view
    queue.push([7, 8, 9], 0, 3); // short: a copy
    frame[0] = 42; // the view sees the frame
    expect(queue.length).toBe(2003);
    expect(Array.from(queue.peek(2))).toEqual([42, 1]);
    expect(Array.from(queue.peek(2003)).slice(1998)).toEqual([1998, 1999, 7, 8, 9]); // across spans: a copy
    const seen: number[][] = [];
    queue.shift(1999, (span, from, to) => seen.push([from, to, span[to - 1]]));
    expect(seen).toEqual([[0, 1999, 1998]]);
    expect(Array.from(queue.peek(4))).toEqual([1999, 7, 8, 9]);
    queue.shift(2);
    expect(Array.from(queue.peek(10))).toEqual([8, 9]);
    queue.clear();
    expect(queue.length).toBe(0);
  });
});
