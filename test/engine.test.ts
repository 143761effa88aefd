import { describe, expect, it } from 'vitest';
import { DraftEngine } from '../src/core/engine.js';
import { SidecarError } from '../src/core/errors.js';

const draftOf = (engine: DraftEngine, id: string, k = 3): number[] => {
  const out = new Int32Array(k);
  return Array.from(out.subarray(0, engine.draft(id, k, out, 0)));
};

const prompt = [100, 101, 102, 103];

describe('draft engine', () => {
  it('lets requests with the same prompt draft from each other (siblings found by prompt ids)', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('a', [...prompt, 1, 2, 3, 4, 5, 6], prompt.length);
    engine.open('b', [...prompt, 1, 2], prompt.length);
    expect(draftOf(engine, 'b')).toEqual([3, 4, 5]);
    expect(engine.stats().groups).toBe(1);
  });

  it('keeps requests with different prompts apart', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('a', [...prompt, 1, 2, 3, 4, 5, 6], prompt.length);
    engine.open('b', [100, 101, 102, 999, 1, 2], prompt.length);
    expect(draftOf(engine, 'b')).toEqual([]);
    expect(engine.stats().groups).toBe(2);
  });

  it('continues a group when a prompt extends its whole prompt (a later turn): siblings\' later turns draft for it', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    // Turn 1 of two samples, then turn 2 of the first: its prompt is the conversation so far.
    engine.open('s0-turn1', [...prompt, 1, 2, 3], prompt.length);
    engine.open('s1-turn1', [...prompt, 1, 2, 3], prompt.length);
    engine.release('s0-turn1');
    const turn2 = [...prompt, 1, 2, 3, 900, 901, 7, 8, 9, 10];
    engine.open('s0-turn2', turn2, prompt.length + 5);
    engine.release('s1-turn1');
    // The second sample's turn 2 drafts what the first one's turn 2 said after the same tool output.
    engine.open('s1-turn2', [...prompt, 1, 2, 3, 900, 901, 7], prompt.length + 5);
    expect(draftOf(engine, 's1-turn2')).toEqual([8, 9, 10]);
    expect(engine.stats().groups).toBe(1);
    // The request keeps its own prompt length.
    expect(engine.promptLengthOf('s1-turn2')).toBe(prompt.length + 5);
  });

  it('starts a group of its own for a prompt that extends no group\'s whole prompt, whatever it shares', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('a', [...prompt, 1, 2, 3], prompt.length);
    // Shares three of the four prompt tokens, then differs: not a later turn of a.
    engine.open('b', [100, 101, 102, 555, 1, 2, 3, 9], 6);
    expect(engine.stats().groups).toBe(2);
    expect(draftOf(engine, 'b')).toEqual([]);
  });

  it('does not share between siblings when sibling drafting is off', () => {
    const engine = new DraftEngine({ drafter: 'sam', siblings: false });
    engine.open('a', [...prompt, 1, 2, 3, 4, 5, 6], prompt.length);
    engine.open('b', [...prompt, 1, 2], prompt.length);
    // Only b's own context: "1 2" has not occurred before in it.
    expect(draftOf(engine, 'b')).toEqual([]);
  });

  it('keeps a finished group as history for the next rollout step with the same prompt', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 1000 });
    engine.open('step1', [...prompt, 7, 8, 9, 10], prompt.length);
    engine.release('step1');
    expect(engine.stats()).toMatchObject({ requests: 0, historyGroups: 1 });
    engine.open('step2', [...prompt, 7, 8], prompt.length);
    expect(draftOf(engine, 'step2')).toEqual([9, 10]);
    expect(engine.stats().historyGroups).toBe(0);
  });

  it('compacts a retired group as idle work, not inside the release that retired it', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 100_000 });
    engine.open('long', [...prompt, ...Array.from({ length: 5000 }, (_, i) => i % 977)], prompt.length);
    const groupBytes = () => engine.stats().bytes - engine.stats().corpusBytes;
    engine.flushCorpus();
    engine.release('long');
    const released = groupBytes();
    expect(engine.idleWorkPending).toBe(true);
    engine.flushCorpus(); // the released request's stream ends
    while (engine.idleWorkPending) engine.compactRetired();
    expect(groupBytes()).toBeLessThan(released);
  });

  it('compacts a long retired group over several idle slices, each copying at most its budget', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 100_000 });
    const text = Array.from({ length: 20_000 }, (_, i) => (i * 7919) % 5003);
    engine.open('long', [...prompt, ...text], prompt.length);
    const groupBytes = () => engine.stats().bytes - engine.stats().corpusBytes;
    engine.flushCorpus();
    engine.release('long');
    engine.flushCorpus();
    const released = groupBytes();
    let slices = 0;
    while (engine.idleWorkPending) {
      engine.compactRetired(4096);
      slices++;
      if (engine.idleWorkPending) expect(groupBytes()).toBe(released); // the old arrays until the last slice
    }
    expect(slices).toBeGreaterThan(10);
    expect(groupBytes()).toBeLessThan(released);
    // Drafting from history is the same as before: the next step's request continues the text.
    engine.open('again', [...prompt, ...text.slice(0, 100)], prompt.length);
    expect(draftOf(engine, 'again')).toEqual(text.slice(100, 103));
  });

  it('has no idle work while its array supply is making the next array ready, and goes on once it is', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 100_000 });
    let ready = false;
    const supply = {
      awaiting: false,
      take(length: number): Int32Array | null {
        if (ready) return new Int32Array(length);
        supply.awaiting = true;
        return null;
      },
    };
    engine.arraySupply = supply;
    const text = Array.from({ length: 20_000 }, (_, i) => (i * 7919) % 5003);
    engine.open('long', [...prompt, ...text], prompt.length);
    engine.flushCorpus();
    engine.release('long');
    engine.flushCorpus();
    const released = engine.stats().bytes;
    expect(engine.idleWorkPending).toBe(true);
    engine.compactRetired();
    expect(engine.idleWorkPending).toBe(false); // nothing to do but wait: the server is not kept spinning
    expect(engine.stats().bytes).toBe(released);
    ready = true;
    supply.awaiting = false;
    while (engine.idleWorkPending) engine.compactRetired();
    expect(engine.stats().bytes).toBeLessThan(released);
  });

  it('abandons a compaction when the group is rejoined before it ends', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 100_000 });
    const text = Array.from({ length: 20_000 }, (_, i) => (i * 7919) % 5003);
    engine.open('long', [...prompt, ...text], prompt.length);
    engine.flushCorpus();
    engine.release('long');
    engine.flushCorpus();
    engine.compactRetired(4096); // under way
    engine.open('again', [...prompt, ...text.slice(0, 100)], prompt.length);
    engine.append('again', text.slice(100, 110));
    engine.flushCorpus();
    engine.compactRetired(4096);
    expect(engine.idleWorkPending).toBe(false); // dropped: a live group grows, it is not shrunk
    expect(draftOf(engine, 'again')).toEqual(text.slice(110, 113));
  });

  it('evicts least recently used history beyond its token budget', () => {
    const engine = new DraftEngine({ drafter: 'sam', historyTokens: 20 });
    for (let i = 0; i < 4; i++) {
      engine.open(`r${i}`, [i + 1, i + 2, i + 3, 5, 6, 7, 8, 9], 3);
      engine.release(`r${i}`);
    }
    const stats = engine.stats();
    expect(stats.historyTokens).toBeLessThanOrEqual(20);
    expect(stats.historyEvictions).toBe(2);
    expect(stats.historyGroups).toBe(2);
  });

  it('rejects a token id out of range with a coded error naming the field, without touching state', () => {
    const engine = new DraftEngine({ drafter: 'sam', vocabSize: 1000 });
    engine.open('a', [...prompt, 1, 2], prompt.length);
    const before = engine.lengthOf('a');
    let caught: unknown;
    try {
      engine.append('a', [3, 4000]);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SidecarError);
    expect((caught as SidecarError).code).toBe('TOKEN_OUT_OF_RANGE');
    expect((caught as SidecarError).message).toContain('tokens[1]');
    expect(engine.lengthOf('a')).toBe(before);
  });

  it('asks for a resync for an unknown request', () => {
    const engine = new DraftEngine();
    expect(() => engine.append('ghost', [1])).toThrowError(expect.objectContaining({ code: 'UNKNOWN_REQUEST', needsResync: true }));
  });

  it('rejects a prompt length beyond the context', () => {
    const engine = new DraftEngine();
    expect(() => engine.open('a', [1, 2], 3)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'prompt_len' }));
  });

  it('restarts a request that is opened again (resync) from its full context', () => {
    const engine = new DraftEngine({ drafter: 'seed' });
    engine.open('a', [1, 2, 3, 1, 2], 1);
    engine.open('a', [5, 6, 5], 1);
    expect(engine.lengthOf('a')).toBe(3);
    expect(draftOf(engine, 'a')).toEqual([6, 5]);
  });

  it('serves the seed and n-gram drafters from the request alone', () => {
    for (const drafter of ['seed', 'ngram'] as const) {
      const engine = new DraftEngine({ drafter });
      engine.open('a', [...prompt, 1, 2, 3, 9, 1, 2], prompt.length);
      expect(draftOf(engine, 'a')).toEqual([3, 9, 1]);
      expect(engine.release('a')).toBe(true);
      expect(engine.stats().requests).toBe(0);
    }
  });
});

describe('own repetition in a shared group', () => {
  it('drafts as the request went on when it just repeated itself, though a sibling produced the context later', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('me', [...prompt, 5, 6, 1, 2, 3], prompt.length);
    engine.open('sibling', [...prompt, 9, 9, 5, 6, 7, 7, 7], prompt.length);
    engine.append('me', [4, 5, 6]);
    // The sibling wrote "5 6" last (followed by 7 7 7); the request's own "5 6" was followed by 1 2 3.
    expect(draftOf(engine, 'me')).toEqual([1, 2, 3]);
  });

  it('leaves a request alone in its group to the recency walk', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('alone', [...prompt, 5, 6, 1, 2, 3, 4, 5, 6], prompt.length);
    const walked = new DraftEngine({ drafter: 'sam', siblings: false });
    walked.open('alone', [...prompt, 5, 6, 1, 2, 3, 4, 5, 6], prompt.length);
    expect(draftOf(engine, 'alone')).toEqual(draftOf(walked, 'alone'));
  });
});

describe('draft engine limits', () => {
  it('refuses a context longer than one automaton can index, leaving other requests intact', () => {
    const engine = new DraftEngine({ drafter: 'sam' });
    engine.open('kept', [1, 2, 3], 1);
    const huge = { length: 1 << 24 } as ArrayLike<number>;
    const filled = new Proxy(huge, { get: (target, key) => (key === 'length' ? target.length : 1) });
    expect(() => engine.open('huge', filled, 1)).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'context' }));
    expect(engine.has('huge')).toBe(false);
    expect(engine.lengthOf('kept')).toBe(3);
  });
});
