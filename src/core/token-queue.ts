/**
 * Tokens waiting to be indexed, in arrival order. Long spans stay views of the arrays they arrived
 * in (a long context is not copied: on a machine where fresh memory is slow, copying 16 MB held
 * the event loop for tens of milliseconds); short ones are copied, so a decode delta does not keep
 * its whole frame alive.
 */
const VIEW_FROM_TOKENS = 1024;

type Span = ArrayLike<number>;

export class TokenQueue {
  private segments: Span[] = [];
  /** Tokens of segments[0] already taken. */
  private offset = 0;
  length = 0;

  /** Appends tokens[from..to). */
  push(tokens: ArrayLike<number>, from: number, to: number): void {
    const count = to - from;
    if (count <= 0) return;
    if (count >= VIEW_FROM_TOKENS && ArrayBuffer.isView(tokens)) {
      this.segments.push((tokens as unknown as Uint32Array).subarray(from, to));
    } else {
      const copy = new Int32Array(count);
      if (ArrayBuffer.isView(tokens)) copy.set((tokens as unknown as Uint32Array).subarray(from, to));
      else for (let i = 0; i < count; i++) copy[i] = tokens[from + i];
      this.segments.push(copy);
    }
    this.length += count;
  }

  /** The first n tokens (at most length) as one array: a view where they lie in one span, else a copy. */
  peek(n: number): ArrayLike<number> {
    n = Math.min(n, this.length);
    const first = this.segments[0];
    if (first !== undefined && first.length - this.offset >= n) return (first as Uint32Array).subarray(this.offset, this.offset + n);
    const out = new Int32Array(n);
    let at = 0;
    this.forEachSpan(n, (span, from, to) => {
      for (let i = from; i < to; i++) out[at++] = span[i];
    });
    return out;
  }

  /** Hands the first n tokens to `visit`, span by span, and drops them. */
  shift(n: number, visit?: (span: Span, from: number, to: number) => void): void {
    n = Math.min(n, this.length);
    if (visit !== undefined) this.forEachSpan(n, visit);
    this.length -= n;
    let drop = 0;
    while (n > 0) {
      const left = this.segments[drop].length - this.offset;
      if (n < left) {
        this.offset += n;
        break;
      }
      n -= left;
      this.offset = 0;
      drop++;
    }
    if (drop > 0) this.segments.splice(0, drop);
  }

  clear(): void {
    this.segments = [];
    this.offset = 0;
    this.length = 0;
  }

  private forEachSpan(n: number, visit: (span: Span, from: number, to: number) => void): void {
    let offset = this.offset;
    for (let s = 0; n > 0 && s < this.segments.length; s++) {
      const span = this.segments[s];
      const take = Math.min(n, span.length - offset);
      visit(span, offset, offset + take);
      n -= take;
      offset = 0;
    }
  }
}
