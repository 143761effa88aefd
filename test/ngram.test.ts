import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NgramIndex } from '../src/core/ngram.js';
import { bruteNgramDraft } from './oracle.js';

describe('n-gram baseline (vLLM semantics)', () => {
  it('proposes the tokens after the earliest occurrence of the longest suffix n-gram in [min, max]', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 50 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        (tokens, minN, extra, k) => {
          const index = new NgramIndex(minN, minN + extra, 4);
          const out = new Int32Array(k);
          for (let i = 0; i < tokens.length; i++) {
            index.append(tokens[i]);
            const length = index.draft(k, out, 0);
            expect(Array.from(out.subarray(0, length))).toEqual(bruteNgramDraft(tokens.slice(0, i + 1), k, minN, minN + extra));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('matches a hand-checked example', () => {
    const index = new NgramIndex(2, 5);
    for (const t of [1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3]) index.append(t);
    const out = new Int32Array(2);
    // "1 2 3" occurs ending at 2 and 6; the earliest is followed by 4, 1.
    expect(Array.from(out.subarray(0, index.draft(2, out, 0)))).toEqual([4, 1]);
  });
});
