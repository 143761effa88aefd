/**
 * The corpus: the text of every request of every prompt, running or finished, drafted from
 * where a request's own group has little context.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Match } from '../src/core/automaton.js';
import { Corpus } from '../src/core/corpus.js';
import { DraftEngine } from '../src/core/engine.js';
import { UNGATED } from '../src/core/gate.js';
import { StepService } from '../src/core/step-service.js';
import { InProcessBackend } from '../src/replay/in-process.js';
import { replay } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { occursIn } from './oracle.js';
import { recordingGrowthMemory, stepBatch } from './helpers.js';

const draftOf = (engine: DraftEngine, id: string, k = 3): number[] => {
  const out = new Int32Array(k);
  return Array.from(out.subarray(0, engine.draft(id, k, out, 0)));
};

const phrase = [50, 51, 52, 53, 54, 55];

describe('corpus', () => {
  it('lets a request draft from the output of another prompt once it has been indexed', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('a', [1, 2, 3, ...phrase], 3);
    engine.release('a');
    engine.open('b', [7, 8, 9, 50], 3);
    // Outputs wait until the corpus is flushed (the server does it after a reply).
    engine.append('b', [51]);
    expect(draftOf(engine, 'b')).toEqual([]);
    engine.flushCorpus();
    // a's prompt and output, and b's text so far: running requests stream into the corpus too.
    expect(engine.stats().corpusTokens).toBe(9 + 5);
    // A request's match reads its tokens as they come: the next one finds the phrase.
    engine.append('b', [52]);
    expect(draftOf(engine, 'b')).toEqual([53, 54, 55]);
  });

  it('lets requests that run together draft from each other across prompts: running text streams in at each flush', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('running', [1, 2, 3, ...phrase], 3);
    engine.open('other', [7, 8, 9, 50], 3);
    engine.flushCorpus();
    engine.append('other', [51]);
    expect(draftOf(engine, 'other')).toEqual([52, 53, 54]);
    // What 'running' produces next reaches the corpus at the next flush, and nothing twice.
    engine.append('running', [56, 57]);
    engine.flushCorpus();
    expect(engine.stats().corpusTokens).toBe(9 + 5 + 2);
    engine.append('other', [52, 53, 54, 55]);
    expect(draftOf(engine, 'other')).toEqual([56, 57]);
  });

  it('restarts a running stream in the newer generation with its last tokens as context after a rotation', () => {
    const engine = new DraftEngine({ drafter: 'sam', corpusTokens: 200 });
    const long = Array.from({ length: 60 }, (_, i) => 300 + i);
    engine.open('running', [1, 2, 3, ...long], 3);
    engine.flushCorpus();
    // Enough other text to rotate the corpus twice: the first generation, with 'running', is gone.
    for (let i = 0; i < 4; i++) {
      engine.open(`filler${i}`, [10 + i, 11, 12, ...Array.from({ length: 60 }, (_, j) => 1000 * (i + 1) + j)], 3);
      engine.release(`filler${i}`);
      engine.flushCorpus();
    }
    engine.append('running', [400, 401, 402]);
    engine.flushCorpus();
    engine.open('reader', [20, 21, 22, 358, 359], 3);
    // The stream went on from its last tokens: the match runs across the restart.
    expect(draftOf(engine, 'reader')).toEqual([400, 401, 402]);
  });

  it('leaves the draft to the group where its context is as long as the corpus', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('other-prompt', [1, 2, 3, 40, 41, 42, 60, 61, 62], 3);
    engine.release('other-prompt');
    engine.flushCorpus();
    engine.open('sibling', [7, 8, 9, 40, 41, 42, 70, 71, 72], 3);
    engine.open('me', [7, 8, 9, 40, 41, 42], 3);
    expect(draftOf(engine, 'me')).toEqual([70, 71, 72]);
  });

  it('is off for the seed and n-gram drafters, without sibling sharing, and with a budget of 0', () => {
    for (const options of [{ drafter: 'seed' as const }, { drafter: 'ngram' as const }, { drafter: 'sam' as const, siblings: false }, { drafter: 'sam' as const, corpusTokens: 0 }]) {
      const engine = new DraftEngine(options);
      engine.open('a', [1, 2, 3, ...phrase], 3);
      engine.release('a');
      engine.flushCorpus();
      engine.open('b', [7, 8, 9, 50, 51], 3);
      expect({ options, draft: draftOf(engine, 'b'), tokens: engine.stats().corpusTokens }).toEqual({ options, draft: [], tokens: 0 });
    }
  });

  it('keeps within its token budget by dropping its older generation, and matches keep working across rotations', () => {
    const corpus = new Corpus(100);
    const match = corpus.newMatch();
    const sequence = (base: number) => Array.from({ length: 40 }, (_, i) => base + i);
    corpus.add([], sequence(1000), 40);
    for (const t of [1000, 1001, 1002]) corpus.advance(match, t);
    const into = new Match();
    for (let base = 2000; base <= 6000; base += 1000) {
      corpus.add([], sequence(base), 40);
      expect(corpus.tokenCount).toBeLessThanOrEqual(100);
    }
    // Sequences of the newest half remain; the first one has been dropped.
    expect(corpus.draftSource(match, into)).toBeNull();
    for (const t of [6000, 6001]) corpus.advance(match, t);
    expect(corpus.draftSource(match, into)).not.toBeNull();
    expect(into.length).toBe(2);
    // One rotation: the match moves with its generation, which became the older one.
    corpus.add([], sequence(7000), 40);
    expect(corpus.draftSource(match, into)).not.toBeNull();
    expect(into.length).toBe(2);
  });

  it('grows every generation in the memory it is given, the one it holds and those after a rotation', () => {
    const corpus = new Corpus(40_000);
    const grownIn: Int32Array[] = [];
    corpus.memory = {
      allocate(length: number) {
        const array = new Int32Array(length);
        grownIn.push(array);
        return array;
      },
      ahead: (_array: Int32Array, at: number) => at + 4096,
      release: () => {},
    };
    const sequence = (base: number) => Array.from({ length: 12_000 }, (_, i) => base + ((i * 7919) % 4001));
    corpus.add([], sequence(0), 12_000);
    const before = grownIn.length;
    expect(before).toBeGreaterThan(0); // the first generation's growth
    corpus.add([], sequence(10_000), 12_000); // a rotation: a new generation
    corpus.add([], sequence(20_000), 12_000);
    expect(grownIn.length).toBeGreaterThan(before + 1); // the new one's first arrays and growth
  });

  it('plans a generation at its full share once it is past a quarter of it: one growth late in a generation, not several', () => {
    const corpus = new Corpus(400_000); // generations of 200,000 tokens
    const { memory, lengths: grown } = recordingGrowthMemory();
    corpus.memory = memory;
    let seed = 11;
    const chunk = () => Array.from({ length: 1000 }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) % 5000);
    let lateGrowths = 0;
    for (let added = 0; added < 199_000; added += 1000) {
      const before = grown.length;
      corpus.add([], chunk(), 1000);
      if (added >= 200_000 / 4) lateGrowths += grown.length - before;
    }
    expect(corpus.tokenCount).toBe(199_000);
    // States and edges, once each past a quarter; 1.5x at a time grows them three times or more in all.
    expect(lateGrowths).toBeLessThanOrEqual(2);
  });

  it('sheds the older generation\'s growth slack in idle slices after a rotation, not inside it', () => {
    const corpus = new Corpus(20_000);
    const sequence = (base: number) => Array.from({ length: 6000 }, (_, i) => base + ((i * 7919) % 4001));
    corpus.add([], sequence(0), 6000);
    expect(corpus.compactionPending).toBe(false);
    corpus.add([], sequence(10_000), 6000); // past half the budget: the first generation becomes the older one
    expect(corpus.compactionPending).toBe(true);
    const rotated = corpus.byteSize();
    let slices = 0;
    while (corpus.compactionPending) {
      expect(corpus.compactOlder(2048)).toBeLessThanOrEqual(2048);
      slices++;
    }
    expect(slices).toBeGreaterThan(3);
    expect(corpus.byteSize()).toBeLessThan(rotated);
    const match = corpus.newMatch();
    for (const t of sequence(0).slice(0, 5)) corpus.advance(match, t);
    expect(corpus.draftSource(match, new Match())).not.toBeNull(); // still drafts from it
  });

  it('drafts only continuations of what the sidecar has seen, in any interleaving of requests', () => {
    const tokens = fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), tokens, fc.boolean()), { minLength: 1, maxLength: 12 }), (events) => {
        const engine = new DraftEngine({ drafter: 'sam' });
        const contexts = new Map<string, number[]>();
        const seen: number[][] = [];
        events.forEach(([prompt, chunk, finish], i) => {
          const id = `r${prompt}`;
          const context = contexts.get(id);
          if (context === undefined) {
            const opened = [prompt + 100, ...chunk];
            contexts.set(id, opened);
            seen.push(opened);
            engine.open(id, opened, 1);
          } else {
            context.push(...chunk);
            engine.append(id, chunk);
          }
          const own = contexts.get(id)!;
          const draft = draftOf(engine, id, 4);
          let previous = own[own.length - 1];
          for (const token of draft) {
            expect(occursIn(seen, [previous, token])).toBe(true);
            previous = token;
          }
          if (finish) {
            engine.release(id);
            contexts.delete(id);
          }
          if (i % 2 === 0) engine.flushCorpus();
        });
      }),
      { numRuns: 200 },
    );
  });

  it('gives the Step service the same drafts whether the server indexed finished requests between steps or not', () => {
    const serviceOptions = { maxK: 8, requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 1 };
    const eager = new StepService(serviceOptions, UNGATED, {});
    const lazy = new StepService(serviceOptions, UNGATED, {});
    const steps = [
      stepBatch([{ id: 'a', tokens: [1, 2, 3, ...phrase], prompt: 3 }], { stepId: 1n }),
      stepBatch([], { stepId: 2n, finished: ['a'] }),
      stepBatch([{ id: 'b', tokens: [7, 8, 9, 50, 51], prompt: 3 }], { stepId: 3n }),
      stepBatch([{ id: 'b', start: 5, tokens: [52] }], { stepId: 4n }),
    ];
    for (const step of steps) {
      const a = eager.step(step, 0);
      eager.doIdleWork();
      const b = lazy.step(step, 0);
      expect(Array.from(b.drafts)).toEqual(Array.from(a.drafts));
    }
    expect(Array.from(lazy.step(stepBatch([{ id: 'b', start: 6, tokens: [53] }], { stepId: 5n }), 0).drafts)).toEqual([54, 55]);
  });

  it('raises the AL of later groups on rollouts whose samples share phrasing across prompts', async () => {
    const rows = syntheticTraces({ groups: 6, samplesPerGroup: 4, sharedPhrases: 0.5 });
    const without = await replay(rows, new InProcessBackend({ corpusTokens: 0 }), { k: 3, siblings: 'live' });
    const withCorpus = await replay(rows, new InProcessBackend({}), { k: 3, siblings: 'live' });
    expect(withCorpus.al).toBeGreaterThan(without.al);
  });
});
