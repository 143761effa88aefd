/**
 * vLLM's n-gram (prompt lookup) proposer, as a baseline: the longest suffix of length in
 * [minN, maxN] that occurred earlier in the context, its EARLIEST occurrence, and the up to K
 * tokens after it. Like vLLM it rescans the whole context every step (KMP over the reversed
 * context), which is the per-step cost the suffix automaton avoids.
 */
import { grownCapacity, resizedInt32 } from './typed.js';

export class NgramIndex {
  private tokens: Int32Array;
  private length = 0;
  private failure: Int32Array; // KMP failure function over the reversed context

  constructor(
    readonly minN: number,
    readonly maxN: number,
    initialTokens = 256,
  ) {
    this.tokens = new Int32Array(initialTokens);
    this.failure = new Int32Array(maxN);
  }

  get size(): number {
    return this.length;
  }

  byteSize(): number {
    return this.tokens.byteLength + this.failure.byteLength;
  }

  append(token: number): void {
    if (this.length >= this.tokens.length) this.tokens = resizedInt32(this.tokens, grownCapacity(this.tokens.length, this.length + 1));
    this.tokens[this.length++] = token;
  }

  /** Writes up to k draft tokens into out[offset...]; returns how many. */
  draft(k: number, out: Int32Array, offset: number): number {
    const n = this.length;
    const tokens = this.tokens;
    if (n < this.minN + 1 || k <= 0) return 0;
    // Reversed context r[i] = tokens[n - 1 - i]. A prefix of r of length L matching r[j-L+1..j]
    // means the suffix of length L also occurs ending at original index n - 1 - (j - L + 1) + ...;
    // we track, over the text r[1..], the longest prefix of r (capped at maxN) that ends at each j.
    const maxN = this.maxN;
    const failure = this.failure;
    // Failure function of the pattern r[0..maxN-1].
    const patternLength = Math.min(maxN, n);
    failure[0] = 0;
    for (let i = 1, f = 0; i < patternLength; i++) {
      while (f > 0 && tokens[n - 1 - i] !== tokens[n - 1 - f]) f = failure[f - 1];
      if (tokens[n - 1 - i] === tokens[n - 1 - f]) f++;
      failure[i] = f;
    }
    let best = 0;
    let bestEnd = -1; // original index where the best earlier occurrence ends
    let matched = 0;
    for (let j = 1; j < n; j++) {
      const token = tokens[n - 1 - j];
      while (matched > 0 && token !== tokens[n - 1 - matched]) matched = failure[matched - 1];
      if (token === tokens[n - 1 - matched]) matched++;
      // r[j-matched+1..j] == r[0..matched-1]: the suffix of length `matched` occurs in the
      // original context ending at index n - 1 - (j - matched + 1); larger j is earlier.
      if (matched >= best && matched > 0) {
        best = matched;
        bestEnd = n - 1 - (j - matched + 1);
      }
      if (matched === patternLength) matched = failure[matched - 1];
    }
    if (best < this.minN) return 0;
    let count = 0;
    for (let i = bestEnd + 1; i < n && count < k; i++) out[offset + count++] = tokens[i];
    return count;
  }
}
