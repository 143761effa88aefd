import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Match, NONE, ROOT, SuffixAutomaton } from '../src/core/automaton.js';
import { draftingContextLength, ownRepeatDraft, recencyWalkDraft, seedDraft } from '../src/core/policies.js';
import { bruteSeedDraft, longestEarlierSuffix, occursIn } from './oracle.js';

/** Random sequences over a small alphabet, and repetitive ones built from a repeated motif. */
const tokenSequence = fc.oneof(
  fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 60 }),
  fc.array(fc.integer({ min: 0, max: 200_000 }), { minLength: 1, maxLength: 30 }),
  fc
    .tuple(fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 12 }), fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 5 }))
    .map(([motif, times, tail]) => [...Array.from({ length: times }, () => motif).flat(), ...tail]),
);

function build(tokens: number[], positions = true): { sam: SuffixAutomaton; cursor: number } {
  const sam = new SuffixAutomaton({ positions, initialTokens: 16 });
  const cursor = sam.openCursor();
  for (const t of tokens) sam.append(cursor, t);
  return { sam, cursor };
}

describe('suffix automaton', () => {
  it('keeps the running match: link(last) is the longest suffix that occurred earlier', () => {
    fc.assert(
      fc.property(tokenSequence, (tokens) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const cursor = sam.openCursor();
        for (let i = 0; i < tokens.length; i++) {
          sam.append(cursor, tokens[i]);
          const match = sam.suffixLink(sam.lastState(cursor));
          expect(sam.length(match)).toBe(longestEarlierSuffix(tokens.slice(0, i + 1)));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('accepts exactly the substrings of the indexed sequences', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 25 }), { minLength: 1, maxLength: 4 }), (sequences) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const cursors = sequences.map(() => sam.openCursor());
        // Interleave the appends, as live siblings do.
        const longest = Math.max(...sequences.map((s) => s.length));
        for (let i = 0; i < longest; i++) sequences.forEach((s, j) => i < s.length && sam.append(cursors[j], s[i]));
        const walk = (needle: number[]) => needle.reduce((state, t) => (state === NONE ? NONE : sam.transition(state, t)), ROOT);
        for (let length = 1; length <= 4; length++) {
          for (let code = 0; code < 3 ** length; code++) {
            const needle = Array.from({ length }, (_, i) => Math.floor(code / 3 ** i) % 3);
            expect(walk(needle) !== NONE).toBe(occursIn(sequences, needle));
          }
        }
        sequences.forEach((s, j) => expect(sam.length(sam.lastState(cursors[j]))).toBe(s.length));
      }),
      { numRuns: 200 },
    );
  });

  it("keeps every state's recent target equal to its transition on its recent token, across interleaved sequences", () => {
    fc.assert(
      fc.property(fc.array(tokenSequence, { minLength: 1, maxLength: 4 }), (sequences) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const cursors = sequences.map(() => sam.openCursor());
        const longest = Math.max(...sequences.map((s) => s.length));
        for (let i = 0; i < longest; i++) {
          sequences.forEach((s, j) => i < s.length && sam.append(cursors[j], s[i]));
          for (let state = 0; state < sam.size; state++) {
            const token = sam.recentToken(state);
            expect(sam.recentTarget(state)).toBe(token === NONE ? NONE : sam.transition(state, token));
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('answers as a plain substring index where many states keep their transitions in tables (and clones copy them)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 12, max: 40 }), fc.integer({ min: 1, max: 1 << 30 }), fc.integer({ min: 1, max: 3 }), (alphabet, seed, sequenceCount) => {
        let state = seed;
        const next = () => ((state = (state * 1103515245 + 12345) >>> 0) >>> 16) % alphabet;
        const sequences = Array.from({ length: sequenceCount }, () => Array.from({ length: 600 }, next));
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const cursors = sequences.map(() => sam.openCursor());
        for (let i = 0; i < 600; i++) sequences.forEach((s, j) => sam.append(cursors[j], s[i]));
        expect(sam.hashedTransitions).toBeGreaterThan(alphabet);
        const walk = (needle: number[]) => needle.reduce((at, t) => (at === NONE ? NONE : sam.transition(at, t)), ROOT);
        for (let n = 0; n < 300; n++) {
          const needle = Array.from({ length: 1 + (n % 3) }, next);
          expect(walk(needle) !== NONE).toBe(occursIn(sequences, needle));
        }
        for (let at = 0; at < sam.size; at++) {
          const token = sam.recentToken(at);
          expect(sam.recentTarget(at)).toBe(token === NONE ? NONE : sam.transition(at, token));
        }
      }),
      { numRuns: 40 },
    );
  });

  it('gives a clone every transition of the state it splits, from a table or a list', () => {
    for (const followers of [3, 20]) {
      // "b" only ever follows "a", so one state holds both "a b" and "b", with `followers`
      // transitions; "c b" then splits it, and the shorter context "b" is a clone with them all.
      const a = 1000;
      const b = 1001;
      const c = 1002;
      const tokens = [...Array.from({ length: followers }, (_, i) => [a, b, i]).flat(), c, b];
      const { sam, cursor } = build(tokens, false);
      const ab = sam.transition(sam.transition(ROOT, a), b);
      const justB = sam.transition(ROOT, b);
      expect(justB).not.toBe(ab);
      expect(sam.length(justB)).toBe(1);
      expect(sam.suffixLink(ab)).toBe(justB);
      expect(sam.lastState(cursor)).not.toBe(justB);
      for (const state of [ab, justB]) {
        const seen: number[] = [];
        sam.forEachTransition(state, (token, target) => {
          seen.push(token);
          expect(sam.transition(state, token)).toBe(target);
        });
        expect(seen.sort((x, y) => x - y)).toEqual(Array.from({ length: followers }, (_, i) => i));
      }
      expect(sam.recentToken(justB)).toBe(sam.recentToken(ab));
    }
  });

  it('stays linear in size: at most 2n states', () => {
    fc.assert(
      fc.property(tokenSequence, (tokens) => {
        const { sam } = build(tokens, false);
        expect(sam.size).toBeLessThanOrEqual(Math.max(2, 2 * tokens.length));
      }),
    );
  });

  it('grows its typed arrays without losing state (hashed high-degree states included)', () => {
    const tokens = Array.from({ length: 20_000 }, (_, i) => (i * 7919) % 1000);
    const { sam, cursor } = build(tokens);
    expect(sam.tokenCount).toBe(20_000);
    expect(sam.length(sam.lastState(cursor))).toBe(20_000);
    // The root has a transition on each of the 1000 distinct tokens.
    let rootEdges = 0;
    sam.forEachTransition(ROOT, () => rootEdges++);
    expect(rootEdges).toBe(1000);
    for (let t = 0; t < 1000; t++) expect(sam.transition(ROOT, t)).not.toBe(NONE);
    expect(sam.transition(ROOT, 1000)).toBe(NONE);
  });

  it('makes room for the tokens it is told to expect in one growth, not 1.5x at a time', () => {
    // Eight 2000-token siblings joining an automaton sized for the first: announced as they join
    // (as the engine does), the arrays grow once each; unannounced, again and again.
    let seed = 7;
    const sequences = Array.from({ length: 8 }, () => Array.from({ length: 2000 }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) % 4));
    const growths = (announce: boolean) => {
      const sam = new SuffixAutomaton({ initialTokens: 2000 });
      const cursors = sequences.map((_, i) => {
        if (announce && i > 0) sam.expect(2000);
        return sam.openCursor();
      });
      let changes = 0;
      let size = sam.byteSize();
      sequences.forEach((tokens, i) => {
        for (const t of tokens) {
          sam.append(cursors[i], t);
          if (sam.byteSize() !== size) (changes++, (size = sam.byteSize()));
        }
      });
      expect(sam.tokenCount).toBe(16_000);
      return changes;
    };
    const announced = growths(true);
    expect(announced).toBeLessThanOrEqual(2); // states and edges
    expect(growths(false)).toBeGreaterThan(announced + 4);
  });

  it('compacts in slices to the same arrays as at once, answering from the old ones meanwhile', () => {
    const tokens = Array.from({ length: 3000 }, (_, i) => (i * 31) % 97);
    const whole = build(tokens).sam;
    whole.compact();
    const { sam, cursor } = build(tokens);
    const out = new Int32Array(4);
    const draftBefore = Array.from(out.subarray(0, seedDraft(sam, cursor, 4, out, 0)));
    let slices = 0;
    while (!sam.compactSome(1000)) {
      slices++;
      expect(Array.from(out.subarray(0, seedDraft(sam, cursor, 4, out, 0)))).toEqual(draftBefore);
    }
    expect(slices).toBeGreaterThan(5);
    expect(sam.byteSize()).toBe(whole.byteSize());
    expect(sam.compactionElementsLeft).toBe(whole.compactionElementsLeft);
    // An append in the middle: the copy starts over from the changed arrays, and loses nothing.
    const growing = build(tokens);
    growing.sam.compactSome(1000);
    growing.sam.append(growing.cursor, 5);
    while (!growing.sam.compactSome(1000));
    const grown = build([...tokens, 5]).sam;
    grown.compact();
    expect(growing.sam.byteSize()).toBe(grown.byteSize());
    expect(Array.from(out.subarray(0, seedDraft(growing.sam, growing.cursor, 4, out, 0)))).toEqual(Array.from(out.subarray(0, seedDraft(grown, 0, 4, out, 0))));
  });

  it('compacts into the arrays its supply hands over, copying nothing while the supply has none ready', () => {
    const tokens = Array.from({ length: 3000 }, (_, i) => (i * 31) % 97);
    const whole = build(tokens).sam;
    whole.compact();
    const { sam, cursor } = build(tokens);
    const asked: number[] = [];
    let readyLength = -1;
    // Each length is ready the second time it is asked for (as if prepared elsewhere meanwhile).
    const supply = {
      awaiting: false,
      take(length: number): Int32Array | null {
        asked.push(length);
        if (readyLength === length) return new Int32Array(length).fill(-7); // stale contents: all overwritten
        readyLength = length;
        return null;
      },
    };
    const left = sam.compactionElementsLeft;
    expect(sam.compactSome(1 << 20, supply)).toBe(false);
    expect(sam.compactionElementsLeft).toBe(left); // waiting: nothing copied
    while (!sam.compactSome(1 << 20, supply));
    // Every array asked for twice (once not ready, once taken), each of exactly its used length.
    expect(asked.length % 2).toBe(0);
    for (let i = 0; i < asked.length; i += 2) expect(asked[i + 1]).toBe(asked[i]);
    // What it copies, and one element of work per state it scans for tables to pack.
    expect(asked.reduce((sum, length) => sum + length, 0) / 2 + sam.size).toBe(left);
    expect(sam.byteSize()).toBe(whole.byteSize());
    const out = new Int32Array(4);
    expect(Array.from(out.subarray(0, seedDraft(sam, cursor, 4, out, 0)))).toEqual(Array.from(out.subarray(0, seedDraft(whole, 0, 4, out, 0))));
  });

  it('keeps the transitions of high-degree states in tables of their own, at most 4/3 slots per transition, compacted with the rest', () => {
    // 180 distinct tokens in random order: the root and every single-token context pass HASH_DEGREE.
    let seed = 11;
    const tokens = Array.from({ length: 6000 }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) % 180);
    const { sam } = build(tokens, false);
    const transitions: Array<[number, number, number]> = [];
    for (let state = 0; state < sam.size; state++) sam.forEachTransition(state, (token, target) => transitions.push([state, token, target]));
    expect(sam.hashedTransitions).toBeGreaterThan(180 * 10);
    expect(sam.hashedTransitions * 4).toBeLessThanOrEqual(sam.hashSlotCount * 3);
    const sizeBefore = sam.byteSize();
    let slices = 0;
    for (let left = sam.compactionElementsLeft; !sam.compactSome(200); left = sam.compactionElementsLeft) {
      expect(left - sam.compactionElementsLeft).toBeLessThanOrEqual(200); // the root's table too, in pieces
      slices++;
    }
    expect(slices).toBeGreaterThan(5);
    expect(sam.byteSize()).toBeLessThan(sizeBefore);
    for (const [state, token, target] of transitions) expect(sam.transition(state, token)).toBe(target);
    expect(sam.transition(ROOT, 180)).toBe(NONE);
    // Written again (a group whose prompt comes back): tables keep growing within the load bound.
    const cursor = sam.openCursor();
    for (let t = 1000; t < 1100; t++) sam.append(cursor, t);
    expect(sam.hashedTransitions * 4).toBeLessThanOrEqual(sam.hashSlotCount * 3);
    for (const [state, token] of transitions) expect(sam.transition(state, token)).not.toBe(NONE);
    for (let t = 1000; t < 1100; t++) expect(sam.transition(ROOT, t)).not.toBe(NONE);
  });

  it('keeps its large arrays in memory it is given, says how far it writes each, and releases every one it replaces', () => {
    const allocated: Int32Array[] = [];
    const released: Int32Array[] = [];
    const written = new Map<Int32Array, number[]>();
    const memory = {
      allocate(length: number): Int32Array | null {
        if (length < 4096) return null; // small ones: the automaton's own
        const array = new Int32Array(length);
        allocated.push(array);
        written.set(array, []);
        return array;
      },
      ahead(array: Int32Array, at: number): number {
        const calls = written.get(array);
        if (calls === undefined) return Number.POSITIVE_INFINITY; // not one of its arrays
        calls.push(at);
        return at + 1000;
      },
      release(array: Int32Array): void {
        released.push(array);
      },
    };
    const tokens = Array.from({ length: 30_000 }, (_, i) => ((i * 7919) % 5003) + (i % 7));
    const shared = new SuffixAutomaton({ memory, initialTokens: 1024 });
    const plain = new SuffixAutomaton({ initialTokens: 1024 });
    const [a, b] = [shared.openCursor(), plain.openCursor()];
    for (const token of tokens) {
      shared.append(a, token);
      plain.append(b, token);
    }
    const out = new Int32Array(3);
    const draft = (sam: SuffixAutomaton, cursor: number) => Array.from(out.subarray(0, recencyWalkDraft(sam, cursor, 3, out, 0, { minMatch: 1 })));
    expect(draft(shared, a)).toEqual(draft(plain, b));
    expect(shared.byteSize()).toBe(plain.byteSize());
    expect(allocated.length).toBeGreaterThan(4); // states and edges, grown several times
    const releasedOwn = () => released.filter((array) => allocated.includes(array)).length;
    expect(releasedOwn()).toBe(allocated.length - 2); // all but the current states and edges
    for (const at of written.values()) {
      // Told in order, never more than its stride apart once it starts.
      for (let i = 1; i < at.length; i++) expect(at[i] - at[i - 1]).toBeGreaterThan(0);
      for (let i = 1; i < at.length; i++) expect(at[i] - at[i - 1]).toBeLessThanOrEqual(1000 + 5);
    }
    shared.compact(); // into exact-size arrays of its own: the last two are released
    expect(releasedOwn()).toBe(allocated.length);
    expect(draft(shared, a)).toEqual(draft(plain, b));
  });

  it('compacts to its used size and keeps answering', () => {
    const tokens = Array.from({ length: 3000 }, (_, i) => (i * 31) % 97);
    const { sam, cursor } = build(tokens);
    const before = sam.byteSize();
    const out = new Int32Array(4);
    const draftBefore = Array.from(out.subarray(0, seedDraft(sam, cursor, 4, out, 0)));
    sam.compact();
    expect(sam.byteSize()).toBeLessThan(before);
    expect(Array.from(out.subarray(0, seedDraft(sam, cursor, 4, out, 0)))).toEqual(draftBefore);
    sam.append(cursor, 5);
    expect(sam.tokenCount).toBe(3001);
  });
});

describe('running match of another text', () => {
  /** Length of the longest suffix of text that occurs in one of the sequences. */
  const bruteMatch = (sequences: number[][], text: number[]) => {
    for (let length = text.length; length > 0; length--) if (occursIn(sequences, text.slice(text.length - length))) return length;
    return 0;
  };

  it('is the longest suffix of the text read so far that occurs in the indexed sequences', () => {
    fc.assert(
      fc.property(fc.array(tokenSequence, { minLength: 1, maxLength: 3 }), tokenSequence, (sequences, text) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        for (const sequence of sequences) {
          const cursor = sam.openCursor();
          for (const t of sequence) sam.append(cursor, t);
        }
        const match = new Match();
        for (let i = 0; i < text.length; i++) {
          sam.extendMatch(match, text[i]);
          expect(match.length).toBe(bruteMatch(sequences, text.slice(0, i + 1)));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('stays a real occurrence, held by its own state, while sequences are added between its tokens', () => {
    const small = fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 12 });
    fc.assert(
      fc.property(fc.array(small, { minLength: 1, maxLength: 40 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 40 }), (sequences, text) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const indexed: number[][] = [];
        const match = new Match();
        for (let i = 0; i < text.length; i++) {
          // A finished sequence arrives before each token: it may split the state the match is at.
          if (i < sequences.length) {
            const cursor = sam.openCursor();
            for (const t of sequences[i]) sam.append(cursor, t);
            indexed.push(sequences[i]);
          }
          sam.extendMatch(match, text[i]);
          expect(occursIn(indexed, text.slice(i + 1 - match.length, i + 1))).toBe(true);
          sam.settle(match);
          if (match.state !== ROOT) {
            expect(match.length).toBeGreaterThan(sam.length(sam.suffixLink(match.state)));
            expect(match.length).toBeLessThanOrEqual(sam.length(match.state));
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('seed policy', () => {
  it('equals the brute-force seed draft for every prefix', () => {
    fc.assert(
      fc.property(tokenSequence, fc.integer({ min: 1, max: 6 }), (tokens, k) => {
        const sam = new SuffixAutomaton({ positions: true, initialTokens: 16 });
        const cursor = sam.openCursor();
        const out = new Int32Array(k);
        for (let i = 0; i < tokens.length; i++) {
          sam.append(cursor, tokens[i]);
          const length = seedDraft(sam, cursor, k, out, 0);
          expect(Array.from(out.subarray(0, length))).toEqual(bruteSeedDraft(tokens.slice(0, i + 1), k));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('recency walk policy', () => {
  it('proposes only real continuations: each token followed its predecessor somewhere', () => {
    fc.assert(
      fc.property(fc.array(tokenSequence, { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 8 }), (sequences, k) => {
        const sam = new SuffixAutomaton({ initialTokens: 16 });
        const cursors = sequences.map(() => sam.openCursor());
        const out = new Int32Array(k);
        const seen = sequences.map(() => [] as number[]);
        const longest = Math.max(...sequences.map((s) => s.length));
        for (let i = 0; i < longest; i++) {
          sequences.forEach((s, j) => {
            if (i >= s.length) return;
            sam.append(cursors[j], s[i]);
            seen[j].push(s[i]);
            const length = recencyWalkDraft(sam, cursors[j], k, out, 0, { minMatch: 1 });
            let previous = s[i];
            for (let d = 0; d < length; d++) {
              expect(occursIn(seen, [previous, out[d]])).toBe(true);
              previous = out[d];
            }
          });
        }
      }),
      { numRuns: 200 },
    );
  });

  it('follows the most recent continuation of the longest context', () => {
    const sam = new SuffixAutomaton();
    const cursor = sam.openCursor();
    // "1 2 3" was followed by 4, later by 5: the later one wins.
    for (const t of [1, 2, 3, 4, 9, 1, 2, 3, 5, 9, 1, 2, 3]) sam.append(cursor, t);
    const out = new Int32Array(3);
    expect(Array.from(out.subarray(0, recencyWalkDraft(sam, cursor, 3, out, 0, { minMatch: 1 })))).toEqual([5, 9, 1]);
  });

  it('drafts from a sibling that is ahead on the same prefix', () => {
    const sam = new SuffixAutomaton();
    const a = sam.openCursor();
    const b = sam.openCursor();
    for (const t of [7, 8, 9, 10, 11, 12]) sam.append(b, t);
    for (const t of [7, 8, 9]) sam.append(a, t);
    const out = new Int32Array(3);
    expect(Array.from(out.subarray(0, recencyWalkDraft(sam, a, 3, out, 0, { minMatch: 1 })))).toEqual([10, 11, 12]);
  });

  it('does not draft from contexts shorter than minMatch', () => {
    const { sam, cursor } = build([1, 2, 3, 1]);
    const out = new Int32Array(3);
    expect(recencyWalkDraft(sam, cursor, 3, out, 0, { minMatch: 1 })).toBeGreaterThan(0);
    expect(recencyWalkDraft(sam, cursor, 3, out, 0, { minMatch: 2 })).toBe(0);
  });
});

describe('own repetition', () => {
  const draft = (text: number[], promptLength: number, contextLength: number, window: number, k = 3) => {
    const out = new Int32Array(k);
    const n = ownRepeatDraft(text.slice(0, promptLength), promptLength, Int32Array.from(text.slice(promptLength)), text.length, contextLength, window, k, out, 0);
    return Array.from(out.subarray(0, n));
  };

  it('copies what followed the latest own occurrence of the context within the window', () => {
    // "7 8" occurred twice before: the latest is followed by 9 10 11.
    const text = [1, 7, 8, 5, 5, 5, 7, 8, 9, 10, 11, 2, 7, 8];
    expect(draft(text, 2, 2, 64)).toEqual([9, 10, 11]);
    // Reads across the prompt / output boundary alike.
    expect(draft(text, 9, 2, 64)).toEqual([9, 10, 11]);
    // Where what followed reaches the current end, the repetition goes on with its period.
    expect(draft([4, 6, 4, 6, 4], 0, 1, 64)).toEqual([6, 4, 6]);
    expect(draft([9, 1, 2, 3, 1, 2, 3], 0, 3, 64)).toEqual([1, 2, 3]);
  });

  it('ignores occurrences older than the window, and contexts it cannot hold', () => {
    const text = [7, 8, 9, ...Array.from({ length: 30 }, (_, i) => 100 + i), 7, 8];
    expect(draft(text, 1, 2, 64)).toEqual([9, 100, 101]);
    expect(draft(text, 1, 2, 16)).toEqual([]);
    expect(draft(text, 1, 20, 16)).toEqual([]);
    expect(draft(text, 1, 0, 64)).toEqual([]);
  });

  it('drafts exactly the continuation of the latest matching occurrence, periodic past the end (brute force)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 2, maxLength: 80 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 2, max: 40 }), (text, contextLength, window) => {
        const n = text.length;
        let expected: number[] = [];
        if (contextLength < window && contextLength < n) {
          for (let end = n - 2; end >= Math.max(contextLength - 1, n - 1 - window); end--) {
            let same = true;
            for (let m = 0; m < contextLength && same; m++) same = text[end - m] === text[n - 1 - m];
            if (same) {
              expected = [0, 1, 2].map((c) => text[end + 1 + (c % (n - 1 - end))]);
              break;
            }
          }
        }
        expect(draft(text, Math.floor(n / 3), contextLength, window)).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('measures the context the recency walk drafts from', () => {
    const sam = new SuffixAutomaton();
    const a = sam.openCursor();
    for (const t of [1, 2, 3, 4]) sam.append(a, t);
    const b = sam.openCursor();
    for (const t of [9, 2, 3]) sam.append(b, t);
    expect(draftingContextLength(sam, b)).toBe(2); // "2 3", followed by 4 in a
    const c = sam.openCursor();
    sam.append(c, 77);
    expect(draftingContextLength(sam, c)).toBe(0);
  });
});

